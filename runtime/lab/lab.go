// Package lab builds the network namespaces and veth pairs that netchan's
// tests and demo send real traffic through, and removes them again.
//
// netchan runs in the root namespace (the one this process runs in) on its
// veth ends, which carry no kernel IPv4 address: netchan owns the address
// given in Endpoint.Addr. The kernel hosts it talks to live in namespaces.
// Addresses come only from 198.18.0.0/15 (RFC 2544), and traffic only flows
// between the namespaces and veths a lab created.
//
// # What a lab owns
//
// For a lab called NAME (1..7 of [a-z0-9]) Up creates, and Down removes,
// exactly:
//   - the namespaces its layout names: NAME-peer, NAME-rtr, NAME-cli,
//     NAME-srv; each one's lo carries the link alias "netchan-lab:NAME";
//   - the root-namespace veth ends NAMEn0 (and NAMEn1), with link alias
//     "netchan-lab:NAME" (the ends in namespaces carry it too);
//   - with Config.RSS, a clsact qdisc and a tc filter (runtime/lab/rssemu) on
//     each host's veth end facing netchan, inside the lab's namespaces;
//   - the state file StateDir/NAME.json, written before anything is created
//     (so a killed Up leaves a record), recording the config, the objects and
//     the process that called Up.
//
// Down deletes a root link only if it carries the alias (or is listed in the
// state file and has no alias, the moment between creating and marking), and
// a namespace only if the state file lists it or its lo carries the mark.
// Nothing else on the machine is touched, so Down and Sweep are safe next to
// other labs and other people's namespaces. If a name the layout needs is
// already taken by something unmarked, Up fails rather than take it over.
//
// # How it is built
//
// Links, addresses, routes and neighbours go through netlink handles opened
// on a namespace's file (netlink.NewHandleAt): no goroutine's thread of ours
// switches namespace. Namespaces are created with `ip netns add`, which runs
// in its own process (so no thread of ours enters the new namespace) and also
// sets up /run/netns as a shared mount, the way every other tool expects to
// find it. Lab.Command uses the same tool's `ip netns exec` for traffic.
//
// Only iproute2 and a shell are needed: every veth pair is created in the
// root namespace, marked, given its offloads there through the ethtool ioctl
// (runtime/internal/ethtool; a device keeps its features when it changes
// namespace), and only then moved into its namespaces. Sysctls inside a
// namespace (/proc/sys/net shows the namespace of the process that opens it)
// are written by `ip netns exec NS sh -c ...`.
//
// Every veth end gets QueueCount rx and tx queues (native XDP attach fails
// with ENOSPC when a veth has fewer rx queues than its peer has tx queues).
// Every end, the hosts' too, has IPv6 disabled, so neither side's kernel
// sends neighbour discovery or MLD noise into netchan, and transmit checksum
// offload, TSO and GSO turned off: veth otherwise sends PARTIAL checksums,
// which look corrupt through AF_XDP, and GSO super-packets that do not fit a
// UMEM frame. Up returns only once every link is operationally up: until the
// kernel's link watch sees the carrier, a device keeps its noop qdisc, which
// drops what is sent (measured: they are up by the time Up checks).
//
// Offloads reads a device's offloads and Ping sends ICMP echo requests, both
// from the calling process's namespace, without the ethtool or ping
// binaries: `netchan` runs them inside a namespace by re-executing itself
// there with `ip netns exec`.
//
// # Emulated RSS
//
// veth has no receive-side scaling: a frame arrives at netchan's end on the queue the sending
// kernel picked by a hash of its own. With Config.RSS (`netchan lab up --rss`) every kernel
// host's veth end facing netchan gets runtime/lab/rssemu: a tc egress program that computes
// the Toeplitz hash a NIC would (four fields for TCP and UDP over IPv4, the addresses for
// other IPv4 and for fragments) with the key RSS names (pipelines.MicrosoftKey, or
// pipelines.SymmetricKey with --rss=symmetric) and sends the frame on queue
// Lab.RETA().Queue(hash) (pipelines.DefaultRETA of QueueCount, as Linux drivers install), so
// it arrives at netchan's end on that receive queue, as from an RSS NIC. It also turns
// net.core.txrehash off in those namespaces and clears XPS on those ends. Measured on Linux
// 6.18 (details in rssemu's doc): the queue sticks, for every flow, with netchan's XDP program
// in native mode; in generic mode veth shifts queues by one, so run netchan in native mode on
// an emulated-RSS lab. Frames that `netchan lab send` sends (AF_XDP, or XDP in live-frame
// mode) bypass the emulation and keep the queue they were sent on; kernel sockets' do not.
// The program goes away with the lab.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/internal/ethtool"
	"github.com/netchan/netchan/runtime/lab/rssemu"
)

// Layout names a lab topology.
type Layout string

const (
	// LayoutPair: root NAMEn0 (netchan 198.18.0.1/24) <-> NAME-peer NAMEp0
	// 198.18.0.2/24, default route via 198.18.0.1.
	LayoutPair Layout = "pair"
	// LayoutRouted: root NAMEn0 (netchan 198.18.0.1/24, gateway
	// 198.18.0.254) <-> NAME-rtr NAMEr0 198.18.0.254/24; NAME-rtr NAMEr1
	// 198.18.1.254/24 <-> NAME-peer NAMEp0 198.18.1.2/24 via 198.18.1.254.
	// The router forwards (ip_forward=1).
	LayoutRouted Layout = "routed"
	// LayoutNAT: NAME-cli NAMEc0 198.18.1.2/24 via 198.18.1.1 <-> root
	// NAMEn0 (netchan inside, 198.18.1.1/24); root NAMEn1 (netchan outside,
	// 198.19.0.1/24) <-> NAME-srv NAMEs0 198.19.0.2/24 via 198.19.0.1.
	LayoutNAT Layout = "nat"
)

const (
	DefaultName       = "nc"
	DefaultQueueCount = 2
	MaxQueueCount     = 16
	// StateDir holds one NAME.json per lab that Up has started to build.
	StateDir = "/run/netchan/lab"
	// markPrefix + NAME is the link alias on every root link and on the lo
	// of every namespace of lab NAME.
	markPrefix = "netchan-lab:"
	upTimeout  = 5 * time.Second
)

// ErrNotRoot is returned (wrapped) when the process is not root.
var ErrNotRoot = errors.New("lab: network namespaces and veth pairs need root: run as root (e.g. sudo go test ...)")

// Config selects a lab. The zero value is a pair lab called "nc" with 2 queues.
type Config struct {
	Name       string // 1..7 chars of [a-z0-9], default "nc"; every name derives from it
	Layout     Layout // default LayoutPair
	QueueCount int    // rx and tx queues on every veth end, default 2, at most 16
	StaticARP  bool   // permanent neighbour entries on kernel hosts for netchan's addresses
	RSS        RSS    // emulated receive-side scaling on the hosts' ends (see the package doc); default off
}

// RSS selects the lab's emulated receive-side scaling: off, or the Toeplitz key it hashes with.
type RSS string

const (
	RSSOff       RSS = ""
	RSSMicrosoft RSS = "microsoft" // rssemu.DefaultKey: pipelines.MicrosoftKey, the usual driver default
	RSSSymmetric RSS = "symmetric" // pipelines.SymmetricKey: both directions of a flow hash alike
)

// Key returns the Toeplitz key of r (a copy), or nil when r is RSSOff or unknown.
func (r RSS) Key() []byte {
	switch r {
	case RSSMicrosoft:
		k := rssemu.DefaultKey
		return k[:]
	case RSSSymmetric:
		k := pipelines.SymmetricKey
		return k[:]
	}
	return nil
}

// Host is a kernel host in a namespace.
type Host struct {
	Role    string // "peer", "router", "client", "server"
	NS      string // namespace name
	Iface   string // its veth end facing netchan (router: the one facing netchan)
	MAC     net.HardwareAddr
	Addr    netip.Prefix // kernel address on Iface
	Gateway netip.Addr   // default route (zero if none)
}

// Endpoint is one of netchan's interfaces: a root-namespace veth end without
// a kernel IPv4 address.
type Endpoint struct {
	Iface string
	Index int
	MAC   net.HardwareAddr
	Addr  netip.Prefix // the address netchan owns on this link (not given to the kernel)
	Peer  Host         // the kernel host at the other end of this veth
}

// Lab is a built lab.
type Lab struct {
	Name       string
	Layout     Layout
	QueueCount int
	RSS        RSS        // emulated RSS on the hosts' ends facing netchan (RSSOff: none)
	Netchan    []Endpoint // pair, routed: [n0]; nat: [inside n0, outside n1]
	Hosts      []Host     // pair: [peer]; routed: [router, peer]; nat: [client, server]
}

// RETA returns the indirection table of the lab's emulated RSS: pipelines.DefaultRETA of
// QueueCount, or nil when RSS is off. A frame with Toeplitz hash h (with l.RSS.Key()) arrives
// at netchan's end on queue RETA().Queue(h).
func (l *Lab) RETA() pipelines.RETA {
	if l.RSS == RSSOff {
		return nil
	}
	return pipelines.DefaultRETA(l.QueueCount)
}

// Command returns `ip netns exec NS argv...`; with ns == "" it runs argv in
// the root namespace. It uses none of l's fields: a nil *Lab works too.
func (l *Lab) Command(ctx context.Context, ns string, argv ...string) *exec.Cmd {
	return command(ctx, ns, argv...)
}

func command(ctx context.Context, ns string, argv ...string) *exec.Cmd {
	if ns == "" {
		if len(argv) == 0 {
			cmd := exec.CommandContext(ctx, "true")
			cmd.Err = errors.New("lab: Command with no arguments")
			return cmd
		}
		return exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
}

// ValidName reports whether name can name a lab: 1..7 chars of [a-z0-9].
func ValidName(name string) error {
	if len(name) < 1 || len(name) > 7 {
		return fmt.Errorf("lab: name %q must be 1..7 characters (link names derive from it and must stay within 15 bytes)", name)
	}
	if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return fmt.Errorf("lab: name %q may contain only a-z and 0-9", name)
	}
	return nil
}

func (c Config) normalize() (Config, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Layout == "" {
		c.Layout = LayoutPair
	}
	if c.QueueCount == 0 {
		c.QueueCount = DefaultQueueCount
	}
	if err := ValidName(c.Name); err != nil {
		return c, err
	}
	if c.QueueCount < 1 || c.QueueCount > MaxQueueCount {
		return c, fmt.Errorf("lab: QueueCount %d out of range 1..%d", c.QueueCount, MaxQueueCount)
	}
	if c.RSS != RSSOff && c.RSS.Key() == nil {
		return c, fmt.Errorf("lab: RSS %q: want %q or %q (or empty for none)", c.RSS, RSSMicrosoft, RSSSymmetric)
	}
	_, err := planFor(c.Name, c.Layout)
	return c, err
}

func checkRoot() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	return nil
}

// Up builds the lab cfg describes. If a complete lab with the same config
// already exists, Up returns it unchanged; a partial or different leftover of
// that name is removed and rebuilt. If Up fails it removes what it made.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	if err := checkRoot(); err != nil {
		return nil, err
	}
	p, _ := planFor(cfg.Name, cfg.Layout)
	if st, err := readState(cfg.Name); err == nil && st.Complete && st.Config == cfg {
		if l, err := describe(cfg, p); err == nil {
			st.Owner = self()
			return l, writeState(st)
		}
	}
	if err := Down(cfg.Name); err != nil {
		return nil, fmt.Errorf("lab %s: removing leftover: %w", cfg.Name, err)
	}
	if err := checkFree(p); err != nil {
		return nil, err
	}
	st := state{Config: cfg, Namespaces: p.namespaces, Links: p.rootLinks(), Owner: self()}
	if err := writeState(st); err != nil {
		return nil, err
	}
	l, err := build(ctx, cfg, p)
	if err == nil {
		st.Complete = true
		err = writeState(st)
	}
	if err != nil {
		if derr := Down(cfg.Name); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", derr))
		}
		return nil, fmt.Errorf("lab %s: %w", cfg.Name, err)
	}
	return l, nil
}

// checkFree fails if a name the plan needs is already taken (by something
// that is not ours: Down has just removed our own leftovers).
func checkFree(p plan) error {
	for _, ns := range p.namespaces {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			return fmt.Errorf("lab: namespace %s exists and is not marked as this lab's; remove it by hand (ip netns del %s) or choose another name", ns, ns)
		}
	}
	for _, name := range p.rootLinks() {
		if _, err := netlink.LinkByName(name); err == nil {
			return fmt.Errorf("lab: link %s exists and is not marked as this lab's; remove it by hand (ip link del %s) or choose another name", name, name)
		}
	}
	return nil
}

func build(ctx context.Context, cfg Config, p plan) (*Lab, error) {
	mark := markPrefix + cfg.Name
	for _, ns := range p.namespaces {
		if err := run(ctx, "", "ip", "netns", "add", ns); err != nil {
			return nil, err
		}
	}
	h, err := openHandles(p.namespaces)
	if err != nil {
		return nil, err
	}
	defer h.close()
	for _, ns := range p.namespaces {
		lo, err := h.at(ns).LinkByName("lo")
		if err == nil {
			err = h.at(ns).LinkSetAlias(lo, mark)
		}
		if err == nil {
			err = h.at(ns).LinkSetUp(lo)
		}
		if err != nil {
			return nil, fmt.Errorf("lo in %s: %w", ns, err)
		}
	}

	q := cfg.QueueCount
	hostEnd := map[[2]string]bool{}
	for _, host := range p.hosts {
		hostEnd[[2]string{host.NS, host.Iface}] = true
	}
	for _, v := range p.veths {
		// Both ends are made here, in the root namespace, so that the ethtool ioctl reaches
		// them; a device keeps its features when it moves to another namespace (tested in
		// runtime/internal/ethtool), so nothing has to run inside the namespaces for them.
		la := netlink.NewLinkAttrs() // TxQLen -1: a zero LinkAttrs would set txqueuelen 0
		la.Name, la.NumTxQueues, la.NumRxQueues = v.if0, q, q
		link := &netlink.Veth{LinkAttrs: la, PeerName: v.if1, PeerTxQLen: -1,
			PeerNumTxQueues: uint32(q), PeerNumRxQueues: uint32(q)}
		if err := h.at("").LinkAdd(link); err != nil {
			return nil, fmt.Errorf("creating veth %s <-> %s: %w", v.if0, v.if1, err)
		}
		for _, e := range [][2]string{{v.ns0, v.if0}, {v.ns1, v.if1}} {
			end, err := h.at("").LinkByName(e[1])
			if err != nil {
				return nil, fmt.Errorf("veth end %s: %w", e[1], err)
			}
			// The kernel ignores IFLA_IFALIAS in the request that creates a link, so the
			// mark is a second step (the state file covers the gap).
			if err := h.at("").LinkSetAlias(end, mark); err != nil {
				return nil, fmt.Errorf("marking %s: %w", e[1], err)
			}
			offloads := map[string]bool{"tx": false, "tso": false, "gso": false}
			// The NAT layout's hosts receive with GRO on: a veth then runs NAPI on their
			// side, which it needs to take frames that an XDP program redirects into its
			// peer (the NAT's fast path, nat.EnableXDPFastPath); without it veth drops them.
			if cfg.Layout == LayoutNAT && hostEnd[e] {
				offloads["gro"] = true
			}
			if err := ethtool.Set(e[1], offloads); err != nil {
				return nil, fmt.Errorf("offloads of %s: %w", e[1], err)
			}
			if e[0] != "" {
				if err := h.at("").LinkSetNsFd(end, int(h.fds[e[0]])); err != nil {
					return nil, fmt.Errorf("moving %s to namespace %s: %w", e[1], e[0], err)
				}
			}
		}
	}
	for _, e := range p.ends() {
		if err := sysctl(ctx, e[0], "net/ipv6/conf/"+e[1]+"/disable_ipv6", "1"); err != nil {
			return nil, err
		}
	}
	for _, ns := range p.forward {
		if err := sysctl(ctx, ns, "net/ipv4/ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	for _, e := range p.ends() {
		if err := h.setUp(e[0], e[1]); err != nil {
			return nil, err
		}
	}
	addrs := p.extraAddrs
	for _, host := range p.hosts {
		addrs = append(addrs, nsAddr{host.NS, host.Iface, host.Addr})
	}
	for _, a := range addrs {
		link, err := h.at(a.ns).LinkByName(a.iface)
		if err == nil {
			err = h.at(a.ns).AddrAdd(link, &netlink.Addr{IPNet: ipNet(a.addr)})
		}
		if err != nil {
			return nil, fmt.Errorf("address %s on %s/%s: %w", a.addr, a.ns, a.iface, err)
		}
	}
	for _, host := range p.hosts {
		if !host.Gateway.IsValid() {
			continue
		}
		link, err := h.at(host.NS).LinkByName(host.Iface)
		if err == nil {
			err = h.at(host.NS).RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: host.Gateway.AsSlice()})
		}
		if err != nil {
			return nil, fmt.Errorf("default route via %s in %s: %w", host.Gateway, host.NS, err)
		}
	}
	if err := h.waitUp(ctx, p.ends()); err != nil {
		return nil, err
	}
	l, err := describeWith(h, cfg, p)
	if err != nil {
		return nil, err
	}
	if cfg.StaticARP {
		for _, ep := range l.Netchan {
			hh := h.at(ep.Peer.NS)
			link, err := hh.LinkByName(ep.Peer.Iface)
			if err == nil {
				err = hh.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4,
					State: netlink.NUD_PERMANENT, IP: ep.Addr.Addr().AsSlice(), HardwareAddr: ep.MAC})
			}
			if err != nil {
				return nil, fmt.Errorf("static ARP entry for %s in %s: %w", ep.Addr.Addr(), ep.Peer.NS, err)
			}
		}
	}
	if cfg.RSS != RSSOff {
		// The emulation stays with the device (a tc filter), so it lives as long as the lab;
		// its detach function is not needed.
		for _, ep := range l.Netchan {
			if _, err := rssemu.Attach(ep.Peer.NS, ep.Peer.Iface, cfg.RSS.Key(), l.RETA()); err != nil {
				return nil, fmt.Errorf("emulated RSS on %s/%s: %w", ep.Peer.NS, ep.Peer.Iface, err)
			}
		}
	}
	return l, nil
}

// describe reads a built lab back from the kernel; it fails if anything the
// plan needs is missing or different.
func describe(cfg Config, p plan) (*Lab, error) {
	for _, ns := range p.namespaces {
		if _, err := os.Stat("/run/netns/" + ns); err != nil {
			return nil, err
		}
	}
	h, err := openHandles(p.namespaces)
	if err != nil {
		return nil, err
	}
	defer h.close()
	l, err := describeWith(h, cfg, p)
	if err != nil || cfg.RSS == RSSOff {
		return l, err
	}
	for _, ep := range l.Netchan {
		if ok, err := rssemu.Attached(ep.Peer.NS, ep.Peer.Iface); err != nil || !ok {
			return nil, fmt.Errorf("%s/%s: emulated RSS not attached (%v)", ep.Peer.NS, ep.Peer.Iface, err)
		}
	}
	return l, nil
}

func describeWith(h *handles, cfg Config, p plan) (*Lab, error) {
	l := &Lab{Name: cfg.Name, Layout: cfg.Layout, QueueCount: cfg.QueueCount, RSS: cfg.RSS}
	links := map[[2]string]netlink.Link{}
	for _, e := range p.ends() {
		link, err := h.at(e[0]).LinkByName(e[1])
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", nsLabel(e[0]), e[1], err)
		}
		a := link.Attrs()
		if a.Flags&net.FlagUp == 0 || a.NumTxQueues != cfg.QueueCount || a.NumRxQueues != cfg.QueueCount {
			return nil, fmt.Errorf("%s/%s: not up or wrong queue count", nsLabel(e[0]), e[1])
		}
		if e[0] == "" && a.Alias != markPrefix+cfg.Name {
			return nil, fmt.Errorf("%s: alias %q is not this lab's", e[1], a.Alias)
		}
		links[e] = link
	}
	for _, host := range p.hosts {
		link := links[[2]string{host.NS, host.Iface}]
		addrs, err := h.at(host.NS).AddrList(link, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != host.Addr.String() {
			return nil, fmt.Errorf("%s/%s: address is not %s", host.NS, host.Iface, host.Addr)
		}
		host.MAC = link.Attrs().HardwareAddr
		l.Hosts = append(l.Hosts, host)
	}
	for i, ep := range p.endpoints {
		a := links[[2]string{"", ep.Iface}].Attrs()
		ep.Index, ep.MAC, ep.Peer = a.Index, a.HardwareAddr, l.Hosts[p.endpointPeer[i]]
		l.Netchan = append(l.Netchan, ep)
	}
	return l, nil
}

// handles holds a netlink handle and an open file for each namespace; ""
// is the root namespace.
type handles struct {
	nl  map[string]*netlink.Handle
	fds map[string]netns.NsHandle
}

func openHandles(namespaces []string) (*handles, error) {
	h := &handles{nl: map[string]*netlink.Handle{}, fds: map[string]netns.NsHandle{}}
	root, err := netns.Get() // this thread's namespace: the process's, as no thread of ours switches
	if err == nil {
		h.fds[""] = root
		h.nl[""], err = netlink.NewHandleAt(root)
	}
	for _, ns := range namespaces {
		if err != nil {
			break
		}
		var fd netns.NsHandle
		if fd, err = netns.GetFromName(ns); err == nil {
			h.fds[ns] = fd
			h.nl[ns], err = netlink.NewHandleAt(fd)
		}
	}
	if err != nil {
		h.close()
		return nil, fmt.Errorf("opening namespaces: %w", err)
	}
	return h, nil
}

func (h *handles) at(ns string) *netlink.Handle { return h.nl[ns] }

func (h *handles) close() {
	for _, nl := range h.nl {
		nl.Close()
	}
	for _, fd := range h.fds {
		fd.Close()
	}
}

func (h *handles) setUp(ns, iface string) error {
	link, err := h.at(ns).LinkByName(iface)
	if err == nil {
		err = h.at(ns).LinkSetUp(link)
	}
	if err != nil {
		return fmt.Errorf("setting %s/%s up: %w", nsLabel(ns), iface, err)
	}
	return nil
}

// waitUp waits until every end is operationally up. Carrier comes up
// asynchronously (link watch), and until then the kernel drops what a host sends.
func (h *handles) waitUp(ctx context.Context, ends [][2]string) error {
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	for _, e := range ends {
		for {
			link, err := h.at(e[0]).LinkByName(e[1])
			if err != nil {
				return err
			}
			if link.Attrs().OperState == netlink.OperUp {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s/%s not operationally up (%s): %w", nsLabel(e[0]), e[1], link.Attrs().OperState, ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return nil
}

// run runs argv in namespace ns ("" = root) and returns its output in the error.
func run(ctx context.Context, ns string, argv ...string) error {
	cmd := command(ctx, ns, argv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sysctl sets /proc/sys/KEY in namespace ns. /proc/sys/net shows the namespace of the process
// that opens it, so the root namespace's is written directly and another's by a shell started
// inside it with `ip netns exec` (sh is in every base system; procps' sysctl is not).
func sysctl(ctx context.Context, ns, key, value string) error {
	path := "/proc/sys/" + key
	if ns == "" {
		return os.WriteFile(path, []byte(value), 0o644)
	}
	return run(ctx, ns, "sh", "-c", `printf '%s\n' "$1" > "$2"`, "sh", value, path)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func nsLabel(ns string) string {
	if ns == "" {
		return "root"
	}
	return ns
}

// MarshalJSON writes MAC as text (02:00:00:00:00:01), as `ip link` shows it, not as base64.
func (h Host) MarshalJSON() ([]byte, error) {
	type plain Host
	return json.Marshal(struct {
		plain
		MAC string
	}{plain(h), h.MAC.String()})
}

// MarshalJSON writes MAC as text (02:00:00:00:00:01), as `ip link` shows it, not as base64.
func (e Endpoint) MarshalJSON() ([]byte, error) {
	type plain Endpoint
	return json.Marshal(struct {
		plain
		MAC string
	}{plain(e), e.MAC.String()})
}
