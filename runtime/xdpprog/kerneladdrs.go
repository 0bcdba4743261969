package xdpprog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetKernelAddrs replaces the deny set with the kernel's IPv4 addresses on the interface:
// packets to one of these addresses, or to the directed broadcast of a prefix shorter than /31,
// are taken only by rules that name them (ports, protocols, the address's /32), never by all or
// a wider prefix. The limited broadcast 255.255.255.255 and multicast 224.0.0.0/4 are always
// treated so, whatever the set. An empty list empties the set. The new set is written before
// the old one is removed, so an address in both is never unprotected on the way.
// FollowKernelAddrs keeps the set in step with the interface.
func (p *Program) SetKernelAddrs(addrs []netip.Prefix) error {
	want := map[[4]byte]struct{}{}
	for _, pfx := range addrs {
		a := pfx.Addr().Unmap()
		if !pfx.IsValid() {
			return fmt.Errorf("xdpprog: SetKernelAddrs: an invalid prefix: give each address with its prefix length (like 198.18.0.1/24)")
		}
		if !a.Is4() {
			return fmt.Errorf("xdpprog: SetKernelAddrs: %v is not an IPv4 address with its prefix length (like 198.18.0.1/24): IPv6 is not supported", pfx)
		}
		bits := pfx.Bits()
		if pfx.Addr().Is4In6() {
			bits -= 96
		}
		want[a.As4()] = struct{}{}
		if bits < 31 {
			v := binary.BigEndian.Uint32(a.AsSlice()) | (1<<(32-bits) - 1)
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], v)
			want[b] = struct{}{}
		}
	}
	if len(want) > maxKernelAddrs {
		return fmt.Errorf("xdpprog: SetKernelAddrs: %d addresses and broadcasts, more than the deny set holds (%d)", len(want), maxKernelAddrs)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	for k := range want {
		if _, ok := p.denySet[k]; ok {
			continue
		}
		if err := p.deny.Update(k, uint32(1), ebpf.UpdateAny); err != nil {
			return wrapPerm(fmt.Sprintf("adding %v to the deny set", netip.AddrFrom4(k)), err)
		}
		p.denySet[k] = struct{}{}
	}
	for k := range p.denySet {
		if _, ok := want[k]; ok {
			continue
		}
		if err := p.deny.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return wrapPerm(fmt.Sprintf("removing %v from the deny set", netip.AddrFrom4(k)), err)
		}
		delete(p.denySet, k)
	}
	p.kernelPfx = slices.Clone(addrs)
	return nil
}

// KernelAddrs returns the addresses last given to SetKernelAddrs.
func (p *Program) KernelAddrs() []netip.Prefix {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.kernelPfx)
}

// ProtectedAddrs returns the deny set as the program sees it: the kernel addresses and their
// directed broadcasts, sorted (255.255.255.255 and multicast are protected without being in
// it).
func (p *Program) ProtectedAddrs() []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]netip.Addr, 0, len(p.denySet))
	for k := range p.denySet {
		out = append(out, netip.AddrFrom4(k))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// kernelAddrs lists the IPv4 addresses of interface ifindex, in this process's namespace.
func kernelAddrs(ifindex int) ([]netip.Prefix, error) {
	lnk := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
	list, err := netlink.AddrList(lnk, netlink.FAMILY_V4)
	if err != nil {
		return nil, wrapPerm(fmt.Sprintf("listing the IPv4 addresses of ifindex %d", ifindex), err)
	}
	var out []netip.Prefix
	for _, a := range list {
		if a.IPNet == nil || a.LinkIndex != ifindex {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		bits, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, bits))
	}
	return out, nil
}

// followRetry is how long FollowKernelAddrs waits before it subscribes again after its
// netlink subscription broke (a receive buffer overrun, for one).
const followRetry = 100 * time.Millisecond

// FollowKernelAddrs keeps p's deny set equal to the IPv4 addresses of interface ifindex: it
// reads them now (an error if that fails), calls SetKernelAddrs, and then re-reads them on
// every netlink address event for that interface, until stop is called. It works in the
// namespace of the calling process (no setns): run it in a process started inside the
// interface's namespace. logf (nil: log nothing) gets the errors it meets after it started,
// such as a subscription that broke and was renewed; on such an error the set stays as it was
// until the next successful read. stop waits until the follower's goroutines are gone and its
// netlink socket is closed; calling it again does nothing.
func FollowKernelAddrs(ifindex int, p *Program, logf func(string, ...any)) (stop func(), err error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if _, err := netlink.LinkByIndex(ifindex); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("%w: FollowKernelAddrs: no interface has index %d in this network namespace", ErrNoInterface, ifindex)
		}
		return nil, wrapPerm(fmt.Sprintf("looking up ifindex %d", ifindex), err)
	}
	f := &follower{ifindex: ifindex, p: p, logf: logf, quit: make(chan struct{}), exited: make(chan struct{})}
	// Subscribe before the first read, so that no change falls between the two.
	sub, err := f.subscribe()
	if err != nil {
		return nil, err
	}
	if err := f.refresh(); err != nil {
		sub.close()
		return nil, err
	}
	go f.run(sub)
	var once sync.Once
	return func() {
		once.Do(func() {
			close(f.quit)
			<-f.exited
		})
	}, nil
}

type follower struct {
	ifindex int
	p       *Program
	logf    func(string, ...any)
	quit    chan struct{} // closed by stop
	exited  chan struct{} // closed when run returns
}

// subscription is one netlink address subscription: closing done closes its socket, which
// ends the library's receive goroutine, which closes ch.
type subscription struct {
	ch   chan netlink.AddrUpdate
	done chan struct{}
	errs chan error
}

// close closes the socket and waits for the receive goroutine to close ch, draining it so that
// the goroutine is never stuck on a send.
func (s *subscription) close() {
	close(s.done)
	for range s.ch {
	}
}

func (f *follower) subscribe() (*subscription, error) {
	s := &subscription{ch: make(chan netlink.AddrUpdate, 64), done: make(chan struct{}), errs: make(chan error, 1)}
	err := netlink.AddrSubscribeWithOptions(s.ch, s.done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case s.errs <- err:
			default:
			}
		},
	})
	if err != nil {
		close(s.done)
		return nil, wrapPerm(fmt.Sprintf("subscribing to the address events of ifindex %d", f.ifindex), err)
	}
	return s, nil
}

// refresh reads the interface's addresses and writes the deny set.
func (f *follower) refresh() error {
	addrs, err := kernelAddrs(f.ifindex)
	if err != nil {
		return err
	}
	return f.p.SetKernelAddrs(addrs)
}

func (f *follower) run(sub *subscription) {
	defer close(f.exited)
	defer func() {
		if sub != nil {
			sub.close()
		}
	}()
	for {
		if sub == nil {
			select {
			case <-f.quit:
				return
			case <-time.After(followRetry):
			}
			s, err := f.subscribe()
			if err != nil {
				f.logf("xdpprog: following the kernel addresses of ifindex %d: %v; retrying", f.ifindex, err)
				continue
			}
			sub = s
			// Events may have been lost while there was no subscription.
			if err := f.refresh(); err != nil {
				f.logf("xdpprog: following the kernel addresses of ifindex %d: %v", f.ifindex, err)
			}
		}
		select {
		case <-f.quit:
			return
		case u, ok := <-sub.ch:
			if !ok {
				var why error = errors.New("the subscription ended")
				select {
				case why = <-sub.errs:
				default:
				}
				f.logf("xdpprog: following the kernel addresses of ifindex %d: netlink: %v; subscribing again", f.ifindex, why)
				close(sub.done)
				sub = nil
				continue
			}
			if !f.ours(u) {
				continue
			}
			// Take the burst (an interface brought up with several addresses) in one read.
			f.drain(sub)
			if err := f.refresh(); err != nil && !errors.Is(err, ErrClosed) {
				f.logf("xdpprog: following the kernel addresses of ifindex %d: %v", f.ifindex, err)
			}
		}
	}
}

func (f *follower) ours(u netlink.AddrUpdate) bool {
	return u.LinkIndex == f.ifindex && u.LinkAddress.IP.To4() != nil
}

// drain takes the events already queued without waiting.
func (f *follower) drain(sub *subscription) {
	for {
		select {
		case _, ok := <-sub.ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}
