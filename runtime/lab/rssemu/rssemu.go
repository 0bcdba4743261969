// Package rssemu makes a lab's veth behave like a NIC with receive-side scaling (RSS).
//
// veth has no RSS: a frame arrives at netchan's end on the queue that the sending kernel
// chose to transmit it on, by a per-socket hash of its own. Attach emulates a NIC on the
// sending side instead: a tc program on the egress of the kernel host's veth end (the one
// facing netchan) computes the Toeplitz hash of every IPv4 packet and sends it on transmit
// queue RETA[hash % len(RETA)], so that it arrives on the receive queue of that number at
// netchan's end, the queue a NIC with that key and indirection table would have chosen. The
// hash and the table are exactly pipelines.Toeplitz's and pipelines.RETA.Queue's:
//
//   - TCP and UDP over IPv4, not fragmented: HashIPv4Ports(src, dst, sport, dport), the
//     NDIS "TCP/IPv4" input (and that of NICs set to hash UDP on four fields);
//   - any other IPv4 packet, and every fragment (MF set or a nonzero offset): HashIPv4(src,
//     dst);
//   - anything else (ARP, IPv6): left to the kernel's own choice.
//
// netchan's shards can therefore compute the owner of a flow the way they would on a real
// NIC. The program takes one map lookup for the key's table (12 rows of 256 uint32s, the
// table pipelines.Toeplitz keeps: one load per input byte), one for the RETA, and two
// bpf_skb_load_bytes calls for the headers. It is assembled at run time with cilium/ebpf's
// asm package, as netchan's XDP program is; no C compiler is needed.
//
// # What holds on this kernel (measured on Linux 6.18, veth, 2 CPUs)
//
//   - A tc program's write of skb->queue_mapping does not choose the transmit queue by
//     itself: only act_skbedit can tell the kernel to keep it (netdev_xmit_skip_txqueue), and
//     skbedit is not built into this kernel. The kernel picks the queue after the egress hook
//     (netdev_pick_tx); without XPS it reads a nonzero queue_mapping as a recorded receive
//     queue and transmits on queue_mapping-1 (skb_tx_hash), the path forwarded packets take.
//     So the program writes queue+1. Measured: writing 1..4 on a 4-queue veth sent every
//     datagram, from connected and unconnected sockets, on queues 0..3, and 5 wrapped to 0;
//     a TCX program (link.AttachTCX) behaves the same as the cls_bpf filter.
//   - veth then hands the frame to the receive queue of the same number at the other end:
//     with native XDP on netchan's end, rx_queue_index equals the queue computed here (the
//     tests check every flow: the mapping sticks). In generic mode veth shifts queues by one
//     (transmit queues 0..3 arrived as 0,0,1,2), so netchan's end must run its XDP program in
//     native (driver) mode.
//   - XPS on the sending veth overrides the choice (with xps_cpus set, the queue followed the
//     sending CPU), so Attach clears xps_cpus and xps_rxqs on every transmit queue of iface.
//   - net.core.txrehash (a per-namespace sysctl, 1 in a new namespace; a socket can override
//     it with SO_TXREHASH) makes TCP pick a new transmit hash after a retransmission timeout
//     or a spurious retransmission, which on plain veth moves a flow to another queue. With
//     the program attached it does not: the queue is recomputed from the packet on every
//     send (measured: 20 connections' SYNs and their retransmissions, with txrehash=1 and 60
//     timeout rehashes counted, all arrived on the computed queue). Attach still sets
//     txrehash to 0 in the namespace, so that the emulation does not depend on this.
//   - Packets that bypass the queueing layer bypass the emulation and keep the queue they
//     were sent on: AF_XDP transmit and XDP in live-frame mode (both engines of `netchan lab
//     send`) and packet sockets with PACKET_QDISC_BYPASS.
//   - A connected UDP socket caches its transmit queue (netdev_pick_tx keeps it unless the
//     packet is marked ooo_okay, which UDP never does): measured, 64 connected sockets that
//     had sent before Attach all kept their old queue after it. Open sockets after Attach (a
//     lab attaches before anything runs in it).
//
// The program is attached through netlink as a direct-action cls_bpf filter under a clsact
// qdisc, not as a TCX link: a TCX link lives only as long as the process holding it (or a pin
// in bpffs), while a filter stays with the device, so a lab built by `netchan lab up` keeps
// its emulation after the command exits, and it goes away with the device when the lab is
// taken down. The filter does not need a thread of ours to enter the namespace: the netlink
// handle is opened on the namespace's file.
package rssemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/pipelines"
)

// DefaultKey is the Toeplitz key a lab emulates RSS with unless it asks for the symmetric key
// (lab.RSSMicrosoft, `netchan lab up --rss`): pipelines.MicrosoftKey, the default of many NIC
// drivers. The lab's table is pipelines.DefaultRETA of its queue count.
var DefaultKey = pipelines.MicrosoftKey

// The filter's place under the clsact qdisc: priority 1 runs it before filters of the usual
// priorities, and it returns TC_ACT_UNSPEC, so later filters still run.
const (
	filterPrio   = 1
	filterHandle = 0x4e43 // "NC"
)

// Attach loads the emulation for key (a Toeplitz key pipelines.NewToeplitz takes, 40 bytes
// as a rule: pipelines.MicrosoftKey, pipelines.SymmetricKey) and reta, and attaches it to the
// egress of iface in network namespace ns (a name under /run/netns; "" is the caller's
// namespace). Every entry of reta must name one of iface's transmit queues; an empty reta
// sends every IPv4 packet on queue 0, as pipelines.RETA.Queue says. Attach also sets
// net.core.txrehash to 0 in ns and clears XPS on iface (see the package doc). Attaching
// again replaces the emulation.
//
// The emulation stays when the caller exits and goes away with the device. detach removes it
// earlier: the filter, the clsact qdisc if Attach created it, and the txrehash and XPS
// settings Attach changed, restored. detach is a no-op once the namespace or the device is
// gone.
func Attach(ns, iface string, key []byte, reta pipelines.RETA) (detach func() error, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("rssemu: attaching a tc program needs root (CAP_BPF, CAP_NET_ADMIN)")
	}
	h, err := handleAt(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("rssemu: %s in %s: %w", iface, nsLabel(ns), err)
	}
	txq := link.Attrs().NumTxQueues
	for i, q := range reta {
		if int(q) >= txq {
			return nil, fmt.Errorf("rssemu: RETA[%d] = %d, but %s has %d transmit queues", i, q, iface, txq)
		}
	}
	coll, err := load(key, reta, live)
	if err != nil {
		return nil, err
	}
	defer coll.Close() // the filter holds the program, the program its maps

	created, err := ensureClsact(h, link)
	if err != nil {
		return nil, err
	}
	if err := h.FilterReplace(filter(link, coll.Programs[progName])); err != nil {
		err = fmt.Errorf("rssemu: attaching to the egress of %s in %s: %w", iface, nsLabel(ns), err)
		return nil, errors.Join(err, remove(h, link, created))
	}
	saved, err := setSysctls(ns, iface, txq)
	if err != nil {
		return nil, errors.Join(err, remove(h, link, created))
	}

	done := false
	return func() error {
		if done {
			return nil
		}
		done = true
		h, err := handleAt(ns)
		if err != nil {
			if gone(err) {
				return nil
			}
			return err
		}
		defer h.Close()
		l, err := h.LinkByName(iface)
		if err != nil {
			if gone(err) {
				return nil
			}
			return fmt.Errorf("rssemu: %s in %s: %w", iface, nsLabel(ns), err)
		}
		if l.Attrs().Index != link.Attrs().Index {
			return nil // another device of that name: ours is gone, and its filter with it
		}
		errs := []error{remove(h, l, created), restoreSysctls(ns, saved)}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("rssemu: detaching from %s in %s: %w", iface, nsLabel(ns), err)
		}
		return nil
	}, nil
}

// Attached reports whether the emulation's filter is on the egress of iface in namespace ns.
func Attached(ns, iface string) (bool, error) {
	h, err := handleAt(ns)
	if err != nil {
		return false, err
	}
	defer h.Close()
	link, err := h.LinkByName(iface)
	if err != nil {
		return false, fmt.Errorf("rssemu: %s in %s: %w", iface, nsLabel(ns), err)
	}
	filters, err := h.FilterList(link, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return false, nil // no clsact qdisc
		}
		return false, fmt.Errorf("rssemu: listing the filters of %s in %s: %w", iface, nsLabel(ns), err)
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Handle == filterHandle && bf.Priority == filterPrio &&
			strings.HasPrefix(bf.Name, progName) && bf.DirectAction {
			return true, nil
		}
	}
	return false, nil
}

func handleAt(ns string) (*netlink.Handle, error) {
	if ns == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("rssemu: netlink: %w", err)
		}
		return h, nil
	}
	fd, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("rssemu: namespace %s: %w", ns, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, fmt.Errorf("rssemu: netlink in namespace %s: %w", ns, err)
	}
	return h, nil
}

// remove deletes the filter from link, and the clsact qdisc too if Attach created it and no
// other filter has been added to it since.
func remove(h *netlink.Handle, link netlink.Link, created bool) error {
	if err := h.FilterDel(filter(link, nil)); err != nil && !gone(err) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("deleting the filter: %w", err)
	}
	if !created {
		return nil
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		if fs, err := h.FilterList(link, parent); err != nil || len(fs) > 0 {
			return nil // someone else's filters, or no qdisc left to delete
		}
	}
	if err := h.QdiscDel(clsact(link)); err != nil && !gone(err) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("deleting the clsact qdisc: %w", err)
	}
	return nil
}

func clsact(link netlink.Link) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
}

// ensureClsact adds a clsact qdisc to link unless it has one; created says whether it did.
func ensureClsact(h *netlink.Handle, link netlink.Link) (created bool, err error) {
	qdiscs, err := h.QdiscList(link)
	if err != nil {
		return false, fmt.Errorf("rssemu: listing qdiscs of %s: %w", link.Attrs().Name, err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			return false, nil
		}
	}
	if err := h.QdiscAdd(clsact(link)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return false, nil
		}
		return false, fmt.Errorf("rssemu: adding a clsact qdisc to %s: %w", link.Attrs().Name, err)
	}
	return true, nil
}

func filter(link netlink.Link, prog *ebpf.Program) *netlink.BpfFilter {
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: link.Attrs().Index,
			Parent:    netlink.HANDLE_MIN_EGRESS,
			Handle:    filterHandle,
			Priority:  filterPrio,
			Protocol:  unix.ETH_P_ALL,
		},
		Name:         progName,
		DirectAction: true,
	}
	if prog != nil {
		f.Fd = prog.FD()
	}
	return f
}

// gone reports whether err says that a namespace or a device no longer exists.
func gone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, os.ErrNotExist)
}

func nsLabel(ns string) string {
	if ns == "" {
		return "this namespace"
	}
	return "namespace " + ns
}

// setSysctls sets net.core.txrehash to 0 in ns and clears XPS on every transmit queue of
// iface, and returns the previous values as "PATH VALUE" lines for restoreSysctls. /proc/sys/net
// and /sys/class/net show the namespace of the process that opens them, so this runs in a
// shell started in ns by `ip netns exec` (which also mounts a sysfs of ns); XPS files exist
// only on multiqueue devices.
func setSysctls(ns, iface string, txq int) (saved string, err error) {
	const script = `set -e
f=/proc/sys/net/core/txrehash
if [ -e "$f" ]; then printf '%s %s\n' "$f" "$(cat "$f")"; echo 0 > "$f"; fi
if [ "$2" -gt 1 ]; then
	for f in /sys/class/net/"$1"/queues/tx-*/xps_cpus /sys/class/net/"$1"/queues/tx-*/xps_rxqs; do
		[ -e "$f" ] || continue
		printf '%s %s\n' "$f" "$(cat "$f")"
		echo 0 > "$f"
	done
fi`
	out, err := shellIn(ns, script, "", iface, fmt.Sprint(txq))
	if err != nil {
		return "", fmt.Errorf("rssemu: setting txrehash and XPS in %s: %w", nsLabel(ns), err)
	}
	return out, nil
}

// restoreSysctls writes back what setSysctls saved.
func restoreSysctls(ns, saved string) error {
	if saved == "" {
		return nil
	}
	const script = `while read -r f v; do [ ! -e "$f" ] || echo "$v" > "$f"; done`
	if _, err := shellIn(ns, script, saved); err != nil {
		return fmt.Errorf("restoring txrehash and XPS: %w", err)
	}
	return nil
}

func shellIn(ns, script, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{"sh", "-c", script, "sh"}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(argv[:min(len(argv), 6)], " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
