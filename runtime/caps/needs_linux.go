//go:build linux

package caps

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Probe runs fn on an OS thread of its own whose effective set is lowered to eff (within what
// the thread holds), and raises the thread's effective set back afterwards (the permitted set
// stays as it was throughout, so it can): what fn does is refused or allowed as it would be
// after DropTo(eff...). Other threads keep their privileges meanwhile. If the effective set
// cannot be raised back, the thread is not reused: it ends with fn's goroutine.
func Probe(eff Set, fn func() error) error {
	type result struct{ err, probeErr error }
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var was [2]unix.CapUserData
		if err := unix.Capget(&hdr, &was[0]); err != nil {
			runtime.UnlockOSThread()
			done <- result{probeErr: fmt.Errorf("caps: capget: %w", err)}
			return
		}
		low := was
		low[0].Effective &= uint32(eff)
		low[1].Effective &= uint32(eff >> 32)
		if err := unix.Capset(&hdr, &low[0]); err != nil {
			runtime.UnlockOSThread()
			done <- result{probeErr: fmt.Errorf("caps: lowering the effective set: %w", err)}
			return
		}
		err := fn()
		if unix.Capset(&hdr, &was[0]) == nil {
			runtime.UnlockOSThread()
		} // else: still locked, so the thread exits with this goroutine
		done <- result{err: err}
	}()
	r := <-done
	if r.probeErr != nil {
		return r.probeErr
	}
	return r.err
}

// Need is one thing netchan does once set up (after DropTo) and the capabilities it needs on
// this machine, for this process (its kernel, its user, its files).
type Need struct {
	Feature string `json:"feature"`
	Needs   Set    `json:"needs"`
	Why     string `json:"why"`
}

// Needs for features, as NeedsFor returns them.
const (
	// Traffic: the AF_XDP rings, and the wakeups (sendto, poll) of the sockets bound at set-up.
	Traffic = "traffic"
	// Maps: reading and updating the XDP program's BPF maps through the descriptors set-up
	// created: claim changes (reload, netchannels), the XDP counters (status, metrics, top),
	// the kernel-address set, the NAT's fast path.
	Maps = "bpf maps"
	// KernelAddrs: following the interfaces' kernel addresses (netlink dumps and the address
	// events' multicast group).
	KernelAddrs = "kernel addresses"
	// Control: serving the control socket opened at set-up (status, reload, tap) and removing
	// it at exit.
	Control = "control socket"
	// Config: re-reading the configuration file on reload.
	Config = "config reload"
	// ReservedPorts: a netchannel's port added to and removed from
	// /proc/sys/net/ipv4/ip_local_reserved_ports as the channel opens and closes.
	ReservedPorts = "reserved ports"
	// KernelSockets: a netchannel looking for a kernel socket on its port (sock_diag).
	KernelSockets = "kernel sockets"
	// Neighbors: netchannel.Set.NextHopMAC asking the kernel to resolve a neighbour
	// (RTM_NEWNEIGH with NTF_USE).
	Neighbors = "neighbour resolution"
	// Stop: detaching the XDP programs (closing their bpf_links), closing the sockets and
	// tracepoint links, unmapping the UMEMs.
	Stop = "stop"
	// BusyPoll: preferred busy polling (netchan.Config.BusyPoll, --busy-poll): the shards run
	// their queues' NAPI poll with recvfrom and sendto on the AF_XDP sockets. SO_BUSY_POLL,
	// SO_PREFER_BUSY_POLL and SO_BUSY_POLL_BUDGET are set on the sockets at set-up (the last
	// two need CAP_NET_ADMIN then, and SO_BUSY_POLL did above net.core.busy_read on older
	// kernels); the polls afterwards check nothing.
	BusyPoll = "busy polling"
)

// reservedPortsPath is hostnet.ReservedPortsPath (hostnet imports netlink packages caps does
// not need).
const reservedPortsPath = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// NeedsFor says what each feature needs once set up, probing this process where the answer
// depends on the kernel, the user or a file: configPath is the configuration file a reload
// reads again ("" for none). A feature it does not know needs nothing it knows of.
func NeedsFor(configPath string, features ...string) []Need {
	var out []Need
	for _, f := range features {
		n := Need{Feature: f}
		switch f {
		case Traffic:
			n.Why = "sendto and poll on the AF_XDP sockets bound at set-up check nothing"
		case Maps:
			n.Needs, n.Why = mapNeeds()
		case KernelAddrs:
			n.Why = "netlink address dumps and the address events' group are open to every user"
		case Control:
			n.Why = "the socket was bound at set-up; accepting on it and removing it check nothing beyond the directory's owner"
		case Config:
			n.Needs, n.Why = readNeeds(configPath)
		case ReservedPorts:
			n.Needs, n.Why = reservedPortsNeeds()
		case KernelSockets:
			n.Why = "sock_diag dumps are open to every user"
		case Neighbors:
			n.Needs, n.Why = 1<<NetAdmin, "RTM_NEWNEIGH (NTF_USE) needs CAP_NET_ADMIN"
		case Stop:
			n.Why = "closing a bpf_link detaches its XDP program without a capability check; closing sockets and unmapping check nothing"
		case BusyPoll:
			n.Why = "the socket options are set at set-up (SO_PREFER_BUSY_POLL and SO_BUSY_POLL_BUDGET need CAP_NET_ADMIN then); the busy polls afterwards, recvfrom and sendto on the AF_XDP sockets, check nothing"
		}
		out = append(out, n)
	}
	return out
}

// Keep is the union of what needs ask for.
func Keep(needs []Need) []Cap {
	var s Set
	for _, n := range needs {
		s |= n.Needs
	}
	return s.Caps()
}

// mapNeeds finds out whether using a BPF map through its descriptor needs a capability: before
// Linux 5.19 (commit c8644cd0efe7, "bpf: refine kernel.unprivileged_bpf_disabled
// behaviour"), every bpf() command needs CAP_BPF (or CAP_SYS_ADMIN) while
// kernel.unprivileged_bpf_disabled is set; since, only creating maps and loading programs do.
// It creates a map and reads it on a thread without CAP_BPF and CAP_SYS_ADMIN; where it cannot
// (no privilege to create one), it goes by the kernel version and the sysctl.
func mapNeeds() (Set, string) {
	bpf := Set(1 << BPF)
	if eff, err := Effective(); err == nil && eff&(1<<BPF) == 0 && eff&(1<<SysAdmin) != 0 {
		bpf = 1 << SysAdmin // granted CAP_SYS_ADMIN instead of CAP_BPF
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err == nil {
		defer m.Close()
		var v uint32
		perr := Probe(^Set(1<<BPF|1<<SysAdmin), func() error { return m.Lookup(uint32(0), &v) })
		switch {
		case perr == nil:
			return 0, "map reads and updates through a descriptor check nothing on this kernel (tested)"
		case errors.Is(perr, unix.EPERM):
			return bpf, "this kernel checks every bpf() command while kernel.unprivileged_bpf_disabled is set (tested; before Linux 5.19)"
		}
	}
	disabled := strings.TrimSpace(readFile("/proc/sys/kernel/unprivileged_bpf_disabled"))
	if disabled == "0" {
		return 0, "kernel.unprivileged_bpf_disabled is 0"
	}
	maj, min, ok := release()
	if ok && (maj > 5 || maj == 5 && min >= 19) {
		return 0, "map reads and updates through a descriptor check nothing on Linux 5.19 and later"
	}
	return bpf, "before Linux 5.19, every bpf() command needs CAP_BPF while kernel.unprivileged_bpf_disabled is set"
}

// readNeeds finds out whether the configuration file can be read again without
// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (as root reads a file of another user's in a
// private home directory only with them).
func readNeeds(path string) (Set, string) {
	if path == "" {
		return 0, "no configuration file"
	}
	err := Probe(^Set(1<<DACOverride|1<<DACReadSearch), func() error {
		f, err := os.Open(path)
		if err == nil {
			f.Close()
		}
		return err
	})
	if errors.Is(err, os.ErrPermission) {
		return 1 << DACReadSearch, path + " (or a directory above it) is not readable by this user without CAP_DAC_READ_SEARCH (tested)"
	}
	return 0, path + " is readable by this user (tested)"
}

// reservedPortsNeeds finds out whether this user may write ip_local_reserved_ports: the
// namespace's root user may (the file is 0644), another user only with CAP_NET_ADMIN.
func reservedPortsNeeds() (Set, string) {
	err := Probe(0, func() error {
		f, err := os.OpenFile(reservedPortsPath, os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
		return err
	})
	switch {
	case err == nil:
		return 0, "this user may write " + reservedPortsPath + " (tested)"
	case errors.Is(err, os.ErrPermission):
		return 1 << NetAdmin, "only root may write " + reservedPortsPath + ", or a user with CAP_NET_ADMIN (tested)"
	}
	return 1 << NetAdmin, fmt.Sprintf("%s: %v", reservedPortsPath, err)
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// release is the kernel's major and minor version.
func release() (maj, min int, ok bool) {
	parts := strings.SplitN(strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	digits := parts[1]
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i]
	}
	min, err2 := strconv.Atoi(digits)
	return maj, min, err1 == nil && err2 == nil
}
