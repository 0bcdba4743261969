package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The tests build their own network namespaces: anonymous ones (no
// /run/netns entry), alive only as long as the test holds their handles, so
// that closing the handles in t.Cleanup removes them and everything in them
// (the veth pair goes with its ends), and a killed test process leaves
// nothing behind. Nothing runs in, or is changed in, the namespace the test
// process itself runs in; addresses come from 198.18.0.0/15 (RFC 2544).

// requireRoot fails (never skips) a test that needs root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("hostnet: this test creates network namespaces and a veth pair and writes /proc/sys/net inside them: " +
			"it needs root; run it as root, e.g. `sudo go test ./runtime/hostnet/`")
	}
}

// onThreadIn runs f on a locked OS thread switched into ns and switches the
// thread back afterwards. If switching back fails the goroutine ends still
// locked, and the Go runtime discards its thread instead of reusing it.
// Sockets f opens stay in ns after the thread has left it.
func onThreadIn(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread() // not switched: the thread is as it was
			errc <- fmt.Errorf("this thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			if err2 := netns.Set(orig); err2 == nil {
				runtime.UnlockOSThread()
			}
			errc <- fmt.Errorf("entering namespace %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving namespace %s (thread discarded): %w", ns, err))
			return // still locked: the thread ends with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// in runs f in ns and fails the test if it fails.
func in(t testing.TB, ns netns.NsHandle, f func() error) {
	t.Helper()
	if err := onThreadIn(ns, f); err != nil {
		t.Fatal(err)
	}
}

// newNS creates an anonymous network namespace, removed when the test ends.
func newNS(t testing.TB) netns.NsHandle {
	t.Helper()
	requireRoot(t)
	type result struct {
		ns  netns.NsHandle
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{netns.None(), err}
			return
		}
		defer orig.Close()
		ns, err := netns.New() // unshares this thread into the new namespace
		if err2 := netns.Set(orig); err2 != nil {
			res <- result{ns, errors.Join(err, fmt.Errorf("leaving the new namespace (thread discarded): %w", err2))}
			return
		}
		runtime.UnlockOSThread()
		res <- result{ns, err}
	}()
	r := <-res
	if r.ns.IsOpen() {
		t.Cleanup(func() { r.ns.Close() })
	}
	if r.err != nil {
		t.Fatalf("creating a network namespace: %v", r.err)
	}
	return r.ns
}

// pair is two namespaces joined by a veth pair: A's end hna0 has
// 198.18.0.1/24, B's end hnb0 198.18.0.2/24. Both have lo up.
type pair struct {
	a, b         netns.NsHandle
	ha, hb       *netlink.Handle
	linkA, linkB netlink.Link
	addrA, addrB netip.Addr
	macA, macB   net.HardwareAddr
	ifindexA     int
	prefix       netip.Prefix
	nameA, nameB string
}

func newPair(t testing.TB) *pair {
	t.Helper()
	p := &pair{a: newNS(t), b: newNS(t), nameA: "hna0", nameB: "hnb0",
		addrA: netip.MustParseAddr("198.18.0.1"), addrB: netip.MustParseAddr("198.18.0.2"),
		prefix: netip.MustParsePrefix("198.18.0.0/24")}
	var err error
	if p.ha, err = netlink.NewHandleAt(p.a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.ha.Close)
	if p.hb, err = netlink.NewHandleAt(p.b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.hb.Close)

	la := netlink.NewLinkAttrs() // TxQLen -1: a zero LinkAttrs would set txqueuelen 0
	la.Name = p.nameA
	// Made in A with its peer straight in B: the veth never exists in the
	// test process's own namespace.
	if err := p.ha.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: p.nameB, PeerTxQLen: -1,
		PeerNamespace: netlink.NsFd(p.b)}); err != nil {
		t.Fatalf("creating veth %s <-> %s: %v", p.nameA, p.nameB, err)
	}
	t.Cleanup(func() {
		if l, err := p.ha.LinkByName(p.nameA); err == nil {
			if err := p.ha.LinkDel(l); err != nil {
				t.Errorf("deleting veth %s: %v", p.nameA, err)
			}
		}
	})
	setup := func(h *netlink.Handle, name string, addr netip.Addr) netlink.Link {
		t.Helper()
		for _, n := range []string{"lo", name} {
			l, err := h.LinkByName(n)
			if err == nil {
				err = h.LinkSetUp(l)
			}
			if err != nil {
				t.Fatalf("setting %s up: %v", n, err)
			}
		}
		l, err := h.LinkByName(name)
		if err == nil {
			err = h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(24, 32)}})
		}
		if err != nil {
			t.Fatalf("address %s on %s: %v", addr, name, err)
		}
		return l
	}
	p.linkA = setup(p.ha, p.nameA, p.addrA)
	p.linkB = setup(p.hb, p.nameB, p.addrB)
	p.ifindexA = p.linkA.Attrs().Index
	p.macA, p.macB = p.linkA.Attrs().HardwareAddr, p.linkB.Attrs().HardwareAddr
	// Until the link watch sees the carrier the device drops what is sent.
	deadline := time.Now().Add(5 * time.Second)
	for _, e := range []struct {
		h    *netlink.Handle
		name string
	}{{p.ha, p.nameA}, {p.hb, p.nameB}} {
		for {
			l, err := e.h.LinkByName(e.name)
			if err != nil {
				t.Fatal(err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not operationally up: %s", e.name, l.Attrs().OperState)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return p
}

// sysctl reads /proc/sys/KEY in ns (/proc/sys/net shows the namespace of
// the thread that opens it).
func sysctl(t testing.TB, ns netns.NsHandle, key string) string {
	t.Helper()
	var v string
	in(t, ns, func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v
}

// setSysctl writes /proc/sys/KEY in ns.
func setSysctl(t testing.TB, ns netns.NsHandle, key, value string) {
	t.Helper()
	in(t, ns, func() error { return os.WriteFile("/proc/sys/"+key, []byte(value+"\n"), 0o644) })
}

// ctxTimeout is a context that ends after d or with the test.
func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func ipNet(prefix string) *net.IPNet {
	p := netip.MustParsePrefix(prefix)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
