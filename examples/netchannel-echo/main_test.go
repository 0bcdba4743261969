package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines/netchannel"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// childEnv names the function a re-executed test binary runs in a peer's namespace: the test
// runs clients as children under `ip netns exec`, so no goroutine of its own switches
// namespaces.
const childEnv = "NETCHANNEL_ECHO_CHILD"

var children = map[string]func(args []string) error{"udp-client": udpClient, "tcp-client": tcpClient, "ping": pingChild, "udp-send": udpSend}

// udpSend (in the peer's namespace) sends one datagram to ADDR:PORT.
func udpSend(args []string) error {
	c, err := net.Dial("udp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("held by the reader"))
	return err
}

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		if err := children[name](os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	labtest.SweepStale()
	os.Exit(m.Run())
}

const (
	datagrams = 10000
	size      = 128 // UDP payload bytes
	window    = 32
)

// udpClient (in the peer's namespace) sends datagrams of size bytes to ADDR:PORT through a
// kernel socket, window at a time, and checks that every one comes back byte-exact.
func udpClient(args []string) error {
	c, err := net.Dial("udp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	sent := make([]byte, size)
	got := make([]byte, 2048)
	pending := map[uint32][]byte{}
	for seq := uint32(0); seq < datagrams; {
		for k := 0; k < window && seq < datagrams; k++ {
			rand.Read(sent)
			binary.BigEndian.PutUint32(sent, seq)
			pending[seq] = bytes.Clone(sent)
			if _, err := c.Write(sent); err != nil {
				return err
			}
			seq++
		}
		for len(pending) > 0 {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(got)
			if err != nil {
				return fmt.Errorf("after %d datagrams, %d of a window unanswered: %w", seq, len(pending), err)
			}
			if n != size {
				return fmt.Errorf("a reply of %d bytes, want %d", n, size)
			}
			want, ok := pending[binary.BigEndian.Uint32(got)]
			if !ok || !bytes.Equal(want, got[:n]) {
				return fmt.Errorf("a reply that is no pending datagram byte for byte: %x", got[:16])
			}
			delete(pending, binary.BigEndian.Uint32(got))
		}
	}
	fmt.Printf("echoed %d\n", datagrams)
	return nil
}

// tcpClient (in the peer's namespace) sends 1 MiB to a kernel TCP echo at ADDR:PORT and checks
// it comes back.
func tcpClient(args []string) error {
	c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	data := make([]byte, 1<<20)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	back, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(back, data) {
		return fmt.Errorf("TCP echo returned %d bytes, not the %d sent", len(back), len(data))
	}
	fmt.Printf("tcp %d\n", len(back))
	return nil
}

// pingChild pings ADDR three times.
func pingChild(args []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := lab.Ping(ctx, io.Discard, netip.MustParseAddr(args[0]), 3, 100*time.Millisecond, 2*time.Second)
	if err != nil {
		return err
	}
	if n != 3 {
		return fmt.Errorf("%d of 3 pings answered", n)
	}
	fmt.Println("ping 3")
	return nil
}

// labWithKernelAddr makes a one-queue pair lab whose netchan end holds its address as a kernel
// address, as a host's NIC would (the lab gives it none), removed with the lab.
func labWithKernelAddr(t *testing.T) (*lab.Lab, lab.Endpoint, lab.Host) {
	t.Helper()
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	labtest.KernelAddr(t, ep.Iface, ep.Addr)
	return l, ep, ep.Peer
}

// TestLabNetchannelEcho: with a kernel address on netchan's interface, a kernel UDP client gets
// 10,000 datagrams of 128 bytes back byte-exact from the netchannel echo, while the kernel
// answers ARP and ping and a TCP connection to another port of the same address; netchan's
// counters show it took the echo's flow and nothing else.
func TestLabNetchannelEcho(t *testing.T) {
	l, ep, peer := labWithKernelAddr(t)
	addr := ep.Addr.Addr()

	// The kernel's own TCP echo on another port of the same address.
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	in, set, ch, err := start(ep.Iface, 9999, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	if reserved, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports"); !strings.Contains(","+strings.TrimSpace(string(reserved))+",", ",9999,") {
		t.Errorf("port 9999 is not reserved while its channel is open: %q", reserved)
	}
	// A port where the kernel has a socket is refused.
	kudp, err := net.ListenPacket("udp", netip.AddrPortFrom(addr, 7777).String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.Open(fmt.Sprintf("udp:%v:7777", addr), netchannel.Options{}); err == nil || !strings.Contains(err.Error(), "the kernel has a socket") {
		t.Errorf("a channel on a port with a kernel UDP socket: %v, want a refusal naming the socket", err)
	} else {
		t.Logf("refused as it should: %v", err)
	}
	kudp.Close()
	// A reader that starts flows gets its next hop's MAC from the kernel's neighbour table.
	mctx, mcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if mac, err := set.NextHopMAC(mctx, peer.Addr.Addr()); err != nil || mac.String() != peer.MAC.String() {
		t.Errorf("NextHopMAC(%v) = %v, %v; want the peer's %v", peer.Addr.Addr(), mac, err, peer.MAC)
	}
	mcancel()

	ctx, cancel := context.WithCancel(context.Background())
	echoed := make(chan uint64, 1)
	go func() {
		n, err := echo(ctx, ch)
		if err != nil {
			t.Errorf("echo: %v", err)
		}
		echoed <- n
	}()

	// ARP and ping go to the kernel: forget the peer's neighbour entry first, so the kernel
	// must answer ARP again.
	if out, err := l.Command(context.Background(), peer.NS, "ip", "neigh", "flush", "dev", peer.Iface).CombinedOutput(); err != nil {
		t.Fatalf("ip neigh flush: %v: %s", err, out)
	}
	run := func(name string, args ...string) string {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		exe, _ := os.Executable()
		cmd := l.Command(c, peer.NS, append([]string{exe}, args...)...)
		cmd.Env = append(os.Environ(), childEnv+"="+name)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v: %s", name, err, out)
		}
		return string(out)
	}
	t.Log(strings.TrimSpace(run("ping", addr.String())))
	// One after the other: every datagram of the UDP client must come back, and with the
	// 1 MiB TCP transfer on the same veth at the same time a stress round lost 5 before
	// netchan's XDP program saw them (it counted 187 of the first 192): most likely veth's
	// receive ring, filled by both at once.
	t.Log(strings.TrimSpace(run("udp-client", netip.AddrPortFrom(addr, 9999).String())))
	t.Log(strings.TrimSpace(run("tcp-client", netip.AddrPortFrom(addr, 8080).String())))

	st := ch.Stats()
	if st.Received != datagrams || st.Sent != datagrams || len(st.Drops) != 0 {
		t.Errorf("channel %+v: want %d received and sent, no drops", st, datagrams)
	}
	snap := in.Snapshot()[0]
	if snap.RxPackets != datagrams || snap.TxPackets != datagrams {
		t.Errorf("netchan rx %d tx %d: want exactly the %d datagrams each way (ARP, ping and TCP are the kernel's)", snap.RxPackets, snap.TxPackets, datagrams)
	}
	if xs := in.XDPStats()[0]; xs.Claimed != datagrams {
		t.Errorf("the XDP program claimed %d frames, want %d", xs.Claimed, datagrams)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if n := <-echoed; n != datagrams {
		t.Errorf("the echo loop echoed %d", n)
	}
	if reserved, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports"); strings.Contains(","+strings.TrimSpace(string(reserved))+",", ",9999,") {
		t.Errorf("port 9999 is still reserved after Close: %q", reserved)
	}
	if err := in.Stop(); err != nil {
		t.Fatal(err)
	}
	for i, pl := range in.FramePlaces() {
		if pl["lent"] != 0 || pl["batch"] != 0 {
			t.Errorf("shard %d: frames left out: %v", i, pl)
		}
	}
}

// TestLabStopWhileLent: Stop while the reader still holds a frame does not unmap the UMEM
// under it: Stop says so, and the reader can still read the bytes it holds.
func TestLabStopWhileLent(t *testing.T) {
	l, ep, peer := labWithKernelAddr(t)
	set := netchannel.New(netchannel.Config{CloseTimeout: 200 * time.Millisecond})
	in, err := netchan.Start(netchan.Config{Interfaces: []string{ep.Iface}, UMEM: netchan.UMEM{Frames: 8192}, Logf: t.Logf}, set.App("held"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := set.Open(fmt.Sprintf("udp:%v:9999", ep.Addr.Addr()), netchannel.Options{})
	if err != nil {
		in.Stop()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exe, _ := os.Executable()
	cmd := l.Command(ctx, peer.NS, exe, netip.AddrPortFrom(ep.Addr.Addr(), 9999).String())
	cmd.Env = append(os.Environ(), childEnv+"=udp-send")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("udp-send: %v: %s", err, out)
	}
	b := netchannel.NewBatch(4)
	if n, err := ch.Read(ctx, b); err != nil || n != 1 {
		t.Fatalf("read: %d, %v", n, err)
	}
	err = in.Stop()
	if err == nil || !strings.Contains(err.Error(), "stay mapped") {
		t.Fatalf("Stop with a frame held: %v, want an error saying the UMEM stays mapped", err)
	}
	t.Logf("Stop said: %v", err)
	if got := string(b.Bytes(0)[42:60]); got != "held by the reader" {
		t.Errorf("the held frame reads %q after Stop", got)
	}
	ch.Release(b)
}
