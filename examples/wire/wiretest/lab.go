package wiretest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// childEnv names the function a re-executed test binary runs inside a namespace.
const childEnv = "NETCHAN_WIRETEST_CHILD"

// RunChildIfAsked turns the test binary into a traffic generator, a UDP receiver or a pinger
// when a lab test re-executes it inside a namespace; call it first thing in TestMain.
func RunChildIfAsked() {
	trafficgen.RunChildIfAsked()
	var err error
	switch name := os.Getenv(childEnv); name {
	case "":
		return
	case "udp-count":
		err = udpCount(os.Args[1])
	case "ping":
		err = ping(os.Args[1], os.Args[2])
	default:
		err = fmt.Errorf("no child function %q", name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wiretest:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// udpCount (server side) counts the datagrams that reach addr until its stdin closes, then
// prints the count.
func udpCount(addr string) error {
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if raw, err := c.(*net.UDPConn).SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { // past rmem_max: root may (SO_RCVBUFFORCE)
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 32<<20)
		})
	}
	n := make(chan int)
	go func() {
		count, buf := 0, make([]byte, 4096)
		for {
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := c.ReadFrom(buf); err == nil {
				count++
				continue
			}
			select {
			case n <- count:
				return
			default:
			}
		}
	}()
	fmt.Fprintln(os.Stderr, "listening")
	io.Copy(io.Discard, os.Stdin)
	fmt.Println(<-n)
	return nil
}

// ping (either side) sends count echo requests to dst from this namespace's kernel and prints
// the number of replies.
func ping(dst, count string) error {
	n, _ := strconv.Atoi(count)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := lab.Ping(ctx, os.Stderr, netip.MustParseAddr(dst), n, 100*time.Millisecond, 2*time.Second)
	fmt.Println(got)
	if got == 0 {
		return err
	}
	return nil
}

func child(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, exe}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"="+name)
	return cmd
}

// Lab is the lab's nat layout with an example's App running on it: the client (198.18.1.2)
// behind netchan's inside interface, the server (198.19.0.2) behind its outside interface.
type Lab struct {
	t               *testing.T
	Lab             *lab.Lab
	In              *netchan.Instance
	Inside, Outside lab.Endpoint
	Client, Server  lab.Host
	// Wire is the gateway configuration the App was built with.
	Wire wire.Config
}

// StartLab builds the nat layout with queues queues per interface, builds the example's App
// for the lab's gateway addresses, starts it with netchan.Start on [inside, outside], and
// stops it when the test ends (failing the test if Stop reports lost frames). It fails the
// test unless it runs as root.
func StartLab(t *testing.T, queues int, newApp func(wire.Config) (pipelines.App, error)) *Lab {
	t.Helper()
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: queues})
	inside, outside := l.Netchan[0], l.Netchan[1]
	for _, ep := range l.Netchan {
		ifi, err := net.InterfaceByName(ep.Iface)
		if err != nil {
			t.Fatal(err)
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				t.Fatalf("%s carries kernel IPv4 address %v: only netchan may route between the lab's subnets", ep.Iface, a)
			}
		}
	}
	cfg := wire.Config{Inside: inside.Addr, Outside: outside.Addr}
	app, err := newApp(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in, err := netchan.Start(netchan.Config{Interfaces: []string{inside.Iface, outside.Iface}, Debug: true}, app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return &Lab{t: t, Lab: l, In: in, Inside: inside, Outside: outside, Client: inside.Peer, Server: outside.Peer, Wire: cfg}
}

// Prime has each host ping its gateway, so the box learns both MAC addresses from their ARP
// requests and no datagram of the test waits for ARP. The gateways are the box's own
// addresses: the examples' filters never see these pings.
func (l *Lab) Prime() {
	l.t.Helper()
	for _, h := range []lab.Host{l.Client, l.Server} {
		if n := l.Ping(h.NS, h.Gateway, 2); n != 2 {
			l.t.Fatalf("%s pinged its gateway %v: %d of 2 replies", h.Role, h.Gateway, n)
		}
	}
}

// Ping sends count echo requests from namespace ns to dst and returns the replies.
func (l *Lab) Ping(ns string, dst netip.Addr, count int) int {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := child(ctx, ns, "ping", dst.String(), strconv.Itoa(count)).Output()
	n, perr := strconv.Atoi(strings.TrimSpace(string(out)))
	if perr != nil {
		l.t.Fatalf("ping %v from %s: %v %q", dst, ns, err, out)
	}
	return n
}

// Receiver counts the UDP datagrams that reach one port of the server's kernel.
type Receiver struct {
	l   *Lab
	cmd *exec.Cmd
	in  io.WriteCloser
	out strings.Builder
}

// Receive starts a UDP socket on port in the server namespace.
func (l *Lab) Receive(port uint16) *Receiver {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	l.t.Cleanup(cancel)
	r := &Receiver{l: l, cmd: child(ctx, l.Server.NS, "udp-count", fmt.Sprintf("0.0.0.0:%d", port))}
	r.cmd.Stdout = &r.out
	var err error
	if r.in, err = r.cmd.StdinPipe(); err != nil {
		l.t.Fatal(err)
	}
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { r.cmd.Process.Kill(); r.cmd.Wait() })
	line, _ := bufio.NewReader(stderr).ReadString('\n')
	if !strings.Contains(line, "listening") {
		l.t.Fatalf("UDP receiver on port %d: %q", port, line)
	}
	return r
}

// Count waits until nothing more arrives for settle, stops the receiver and returns how many
// datagrams it got.
func (r *Receiver) Count(settle time.Duration) int {
	r.l.t.Helper()
	time.Sleep(settle)
	r.in.Close()
	if err := r.cmd.Wait(); err != nil {
		r.l.t.Fatalf("UDP receiver: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(r.out.String()))
	if err != nil {
		r.l.t.Fatalf("UDP receiver printed %q", r.out.String())
	}
	return n
}

// Send runs the traffic generator in the client namespace: UDP frames from the client's
// interface to netchan's inside MAC address, from the client to the server unless c says
// otherwise (Src, Dst), at c.Rate for c.Count frames. It fails the test unless every frame
// was sent.
func (l *Lab) Send(c trafficgen.Config) trafficgen.Result {
	l.t.Helper()
	r, err := l.SendErr(c)
	if err != nil {
		l.t.Fatal(err)
	}
	return r
}

// SendErr is Send returning its error, for senders that run in goroutines of their own.
func (l *Lab) SendErr(c trafficgen.Config) (trafficgen.Result, error) {
	c.Iface, c.DstMAC = l.Client.Iface, l.Inside.MAC
	if !c.Src.IsValid() {
		c.Src = l.Client.Addr.Addr()
	}
	if !c.Dst.IsValid() {
		c.Dst = l.Server.Addr.Addr()
	}
	if c.Wait == 0 {
		c.Wait = 100 * time.Millisecond
	}
	exe, err := os.Executable()
	if err != nil {
		return trafficgen.Result{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := trafficgen.Command(ctx, l.Client.NS, []string{exe}, c).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return trafficgen.Result{}, fmt.Errorf("traffic generator: %v\n%s", err, stderr)
	}
	r, err := trafficgen.Decode(out)
	if err != nil {
		return r, err
	}
	if r.Sent != c.Count {
		return r, fmt.Errorf("the traffic generator sent %d of %d frames", r.Sent, c.Count)
	}
	return r, nil
}

// Drops sums the shards' drops of one reason.
func (l *Lab) Drops(reason string) uint64 {
	var n uint64
	for _, s := range l.In.Snapshot() {
		n += s.Drops[reason]
	}
	return n
}

// AllDrops sums the shards' drops by reason.
func (l *Lab) AllDrops() map[string]uint64 {
	m := map[string]uint64{}
	for _, s := range l.In.Snapshot() {
		for r, n := range s.Drops {
			if n != 0 {
				m[r] += n
			}
		}
	}
	return m
}
