// Package doctor checks a machine (and optionally interfaces) for what netchan needs, and says
// for each finding what to do about it. `netchan doctor` prints the findings and exits 0 when
// nothing is wrong, 1 otherwise.
//
// What it checks:
//   - kernel: /proc/sys/kernel/osrelease against the 5.11 netchan needs;
//   - af_xdp: that socket(AF_XDP) works (CONFIG_XDP_SOCKETS), and that the BPF JIT is on;
//   - capabilities: CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_IPC_LOCK in CapEff of
//     /proc/self/status;
//   - privileges: what each thing netchan does once set up needs (caps.NeedsFor: the
//     data-plane commands drop to that, on every thread): reload's claim changes and status
//     go through the XDP program's map descriptors, which need CAP_BPF only before Linux 5.19
//     with kernel.unprivileged_bpf_disabled set; a netchannel's reserved port needs
//     CAP_NET_ADMIN unless the user is root; a configuration file a reload reads again needs
//     CAP_DAC_READ_SEARCH where root could read it only by overriding permissions;
//   - memlock: RLIMIT_MEMLOCK against the UMEM a run would lock (frames × frame size × queues),
//     which only matters without CAP_IPC_LOCK (the kernel does not charge UMEM to a process
//     that has it);
//   - per interface (--iface): that it exists and is up, its queue counts (and the --queues
//     asked for), and an XDP program already attached (fine when a running netchan instance
//     holds it, a problem otherwise: a new run would fail);
//   - on veth: the peer. netlink gives the peer's ifindex (IFLA_LINK) and, when the peer lives
//     in another namespace, that namespace's id (IFLA_LINK_NETNSID). The doctor finds the named
//     namespace (/run/netns/*, as `ip netns add` makes them) whose id this namespace knows by
//     that number, looks the peer up there by index, and reads its offloads through the ethtool
//     ioctl (no ethtool binary): in this namespace directly, in another by running a helper
//     there, `ip netns exec NS HELPER... PEER` (Options.Helper; by default this executable's
//     hidden `_helper offloads`, which calls WriteOffloads), since the ioctl sees the namespace
//     of the process that makes it. Transmit checksum offload on the peer makes the kernel send
//     PARTIAL checksums that look corrupt through AF_XDP, and TSO/GSO super-packets do not fit
//     a UMEM frame in generic mode (LAB-NOTES); the fixes it prints are `ethtool -K` commands.
//     It also warns when the peer has more tx queues than this end has rx queues or an MTU over
//     3506 (native XDP is then refused). A peer in an unnamed namespace is reported as not
//     checked;
//   - busy polling, per interface: on veth it is unavailable (veth gives AF_XDP sockets no
//     NAPI id, measured in runtime/afxdp), on another device without a device of its own
//     (/sys/class/net/IF/device) probably too; on a NIC it reads napi_defer_hard_irqs and
//     gro_flush_timeout from sysfs and advises 2 and 200000 (ns), the values DPDK's AF_XDP
//     driver documents for preferred busy polling, when either is 0. Info unless
//     Options.BusyPoll says a run would busy poll (`netchan doctor --busy-poll`, or
//     pipeline.busy_poll.on in --config), when what stands in its way is a warning
//     (docs/busy-poll.md).
package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/caps"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/rss"
)

// Severity grades a finding.
type Severity int

const (
	OK      Severity = iota // as it should be
	Info                    // worth knowing, nothing to do
	Warn                    // works, but badly or not in every mode: fix it
	Problem                 // netchan will fail: fix it
)

func (s Severity) String() string {
	return [...]string{"ok", "info", "warn", "problem"}[s]
}

// MarshalText writes the severity's name in JSON.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Finding is one result: what was checked, what was found, and what to do.
type Finding struct {
	Check    string   `json:"check"`
	Subject  string   `json:"subject,omitempty"` // an interface, or empty for the machine
	Severity Severity `json:"severity"`
	What     string   `json:"what"`
	Fix      string   `json:"fix,omitempty"`
}

// Options say what to check.
type Options struct {
	Ifaces    []string
	Queues    []int // the queues a run would own; nil means all
	Frames    uint32
	FrameSize uint32
	// ConfigPath is the configuration file a run would reload (the privileges finding checks
	// whether it stays readable once netchan has dropped its capabilities).
	ConfigPath string
	// ControlDir is where running instances' sockets are (default control.DefaultDir).
	ControlDir string
	// Helper is the argv of a program that, started inside another namespace with an
	// interface name appended, prints that interface's offloads as WriteOffloads does.
	// Default: this executable with DefaultHelperArgs (netchan's hidden helper command).
	Helper []string
	// BusyPoll says a run would busy poll (netchan.Config.BusyPoll): the busy-polling
	// findings that would make it do nothing, or race the interrupts, are warnings.
	BusyPoll bool
}

// DefaultHelperArgs are the arguments after the executable of the default Options.Helper:
// `netchan _helper offloads IFACE` runs WriteOffloads (cmd/netchan/helper.go).
var DefaultHelperArgs = []string{"_helper", "offloads"}

// Bad reports whether any finding needs action.
func Bad(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity >= Warn })
}

// Check runs every check.
func Check(ctx context.Context, o Options) []Finding {
	if o.Frames == 0 {
		o.Frames = config.DefaultFrames
	}
	if o.FrameSize == 0 {
		o.FrameSize = config.DefaultFrameSize
	}
	var fs []Finding
	fs = append(fs, checkKernel(readTrim("/proc/sys/kernel/osrelease")))
	fs = append(fs, checkAFXDP()...)
	eff, capErr := caps.Effective()
	fs = append(fs, checkCaps(eff, capErr))
	fs = append(fs, checkPrivileges(o.ConfigPath)...)
	var lim unix.Rlimit
	limErr := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim)
	fs = append(fs, checkMemlock(memlockInput{
		hasIPCLock: capErr == nil && eff&(1<<caps.IPCLock) != 0,
		limit:      lim.Cur, limitErr: limErr,
		frames: o.Frames, frameSize: o.FrameSize, queues: queuesToLock(o),
	}))
	var held map[string]string
	if len(o.Ifaces) > 0 {
		held = heldInterfaces(ctx, o.ControlDir)
	}
	if o.Helper == nil && len(o.Ifaces) > 0 {
		if exe, err := os.Executable(); err == nil {
			o.Helper = append([]string{exe}, DefaultHelperArgs...)
		}
	}
	for _, iface := range o.Ifaces {
		fs = append(fs, checkInterface(ctx, iface, o.Queues, held, o.Helper)...)
		if link, err := netlink.LinkByName(iface); err == nil {
			fs = append(fs, checkBusyPoll(readBusyPoll(iface, link.Type()), o.BusyPoll))
		}
	}
	return fs
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// checkKernel compares a kernel release string with 5.11.
func checkKernel(release string) Finding {
	f := Finding{Check: "kernel"}
	maj, min, ok := parseRelease(release)
	switch {
	case !ok:
		f.Severity, f.What = Warn, fmt.Sprintf("cannot read the kernel version (%q)", release)
		f.Fix = "check /proc/sys/kernel/osrelease; netchan needs Linux 5.11 or later"
	case maj < 5 || maj == 5 && min < 11:
		f.Severity, f.What = Problem, fmt.Sprintf("kernel %s is older than 5.11 (AF_XDP shared UMEM across devices, need_wakeup, bpf_link XDP attach)", release)
		f.Fix = "run netchan on Linux 5.11 or later"
	default:
		f.Severity, f.What = OK, fmt.Sprintf("kernel %s (netchan needs 5.11 or later)", release)
	}
	return f
}

func parseRelease(s string) (maj, min int, ok bool) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	digits := parts[1]
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i] // "18-rc1"
	}
	min, err2 := strconv.Atoi(digits)
	return maj, min, err1 == nil && err2 == nil
}

func checkAFXDP() []Finding {
	f := Finding{Check: "af_xdp"}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	switch {
	case err == nil:
		unix.Close(fd)
		f.Severity, f.What = OK, "AF_XDP sockets are available"
	case errors.Is(err, unix.EAFNOSUPPORT):
		f.Severity, f.What = Problem, "this kernel has no AF_XDP sockets (socket(AF_XDP): address family not supported)"
		f.Fix = "use a kernel built with CONFIG_XDP_SOCKETS=y"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		f.Severity, f.What = Warn, "could not open an AF_XDP socket to test: permission denied"
		f.Fix = "run the doctor as root (or with CAP_NET_RAW) to test AF_XDP"
	default:
		f.Severity, f.What = Warn, fmt.Sprintf("opening an AF_XDP socket failed: %v", err)
	}
	out := []Finding{f}
	switch readTrim("/proc/sys/net/core/bpf_jit_enable") {
	case "0":
		out = append(out, Finding{Check: "bpf_jit", Severity: Warn, What: "the BPF JIT is off: the XDP program runs interpreted, slowly",
			Fix: "sysctl -w net.core.bpf_jit_enable=1"})
	case "":
		// no such file: a kernel with the JIT always on
	default:
		out = append(out, Finding{Check: "bpf_jit", Severity: OK, What: "the BPF JIT is on"})
	}
	return out
}

func checkCaps(eff uint64, err error) Finding {
	f := Finding{Check: "capabilities"}
	if err != nil {
		f.Severity, f.What = Warn, fmt.Sprintf("cannot read the capabilities: %v", err)
		return f
	}
	var have, missing []string
	for _, c := range []struct {
		bit  uint
		name string
	}{{caps.NetAdmin, "CAP_NET_ADMIN"}, {caps.NetRaw, "CAP_NET_RAW"}, {caps.BPF, "CAP_BPF"}, {caps.PerfMon, "CAP_PERFMON"}, {caps.IPCLock, "CAP_IPC_LOCK"}} {
		if eff&(1<<c.bit) != 0 {
			have = append(have, c.name)
		} else {
			missing = append(missing, c.name)
		}
	}
	switch {
	case len(missing) == 0:
		f.Severity, f.What = OK, "has "+strings.Join(have, ", ")
	case len(missing) == 1 && missing[0] == "CAP_IPC_LOCK":
		f.Severity, f.What = Info, "has "+strings.Join(have, ", ")+" but not CAP_IPC_LOCK: UMEM counts against RLIMIT_MEMLOCK (see memlock)"
	default:
		f.Severity, f.What = Problem, "missing "+strings.Join(missing, ", ")+": netchan cannot load XDP programs or open AF_XDP sockets"
		f.Fix = "run as root (sudo netchan ...), or grant them: setcap cap_net_admin,cap_net_raw,cap_bpf,cap_perfmon,cap_ipc_lock+ep $(which netchan)"
	}
	return f
}

// AfterSetup are the things each data-plane command still does once set up: the command drops,
// on every thread, to the capabilities these need on the machine (caps.NeedsFor, caps.DropTo),
// and the doctor's privileges findings say what each needs.
var AfterSetup = map[string][]string{
	"run":        {caps.Traffic, caps.Maps, caps.KernelAddrs, caps.Control, caps.Config, caps.Stop},
	"echo":       {caps.Traffic, caps.Maps, caps.KernelAddrs, caps.Control, caps.Config, caps.Stop},
	"nat":        {caps.Traffic, caps.Maps, caps.KernelAddrs, caps.Control, caps.Config, caps.Stop},
	"netchannel": {caps.Traffic, caps.Maps, caps.KernelAddrs, caps.Control, caps.ReservedPorts, caps.Stop},
}

// privilegeFeatures are the rows of the privileges findings: AfterSetup's, and what the
// library does once set up that no command does after its set-up (a netchannel opened later
// looks for kernel sockets on its port; NextHopMAC resolves neighbours), and busy polling.
var privilegeFeatures = []string{caps.Traffic, caps.Maps, caps.KernelAddrs, caps.Control, caps.Config, caps.ReservedPorts,
	caps.KernelSockets, caps.Neighbors, caps.Stop, caps.BusyPoll}

// libraryOnly says who does a privileges row that no command does once set up, or that a
// command does only when asked (busy polling: dropPrivileges adds it to AfterSetup's).
var libraryOnly = map[string]string{
	caps.KernelSockets: "a netchannel opened once set up; the netchannel command opens its channels before",
	caps.Neighbors:     "netchannel.Set.NextHopMAC; no command",
	caps.BusyPoll:      "run, echo and nat with --busy-poll (any command with pipeline.busy_poll.on in --config), the library with netchan.Config.BusyPoll",
}

// checkPrivileges says which capability each thing netchan does once set up needs here
// (caps.NeedsFor probes what depends on the kernel, the user and the files), and which
// commands do it.
func checkPrivileges(configPath string) []Finding {
	out := []Finding{{Check: "privileges", Severity: Info,
		What: "once set up (XDP attached, maps made, sockets bound, control socket open), netchan run, echo, nat and netchannel keep, on every thread, only the capabilities below; they clear the bounding and ambient sets and set no_new_privs"}}
	for _, n := range caps.NeedsFor(configPath, privilegeFeatures...) {
		var by []string
		for _, cmd := range []string{"run", "echo", "nat", "netchannel"} {
			if slices.Contains(AfterSetup[cmd], n.Feature) {
				by = append(by, cmd)
			}
		}
		who := strings.Join(by, ", ")
		if len(by) == 0 {
			who = libraryOnly[n.Feature]
		}
		out = append(out, Finding{Check: "privileges", Severity: Info, What: fmt.Sprintf("%s (%s): %s: %s", n.Feature, who, n.Needs, n.Why)})
	}
	return out
}

type memlockInput struct {
	hasIPCLock bool
	limit      uint64
	limitErr   error
	frames     uint32
	frameSize  uint32
	queues     int
}

func checkMemlock(in memlockInput) Finding {
	f := Finding{Check: "memlock"}
	per := uint64(in.frames) * uint64(in.frameSize)
	need := per * uint64(in.queues)
	run := fmt.Sprintf("a run on %d queue(s) with %d frames of %d bytes locks %s (%s per queue)", in.queues, in.frames, in.frameSize, size(need), size(per))
	switch {
	case in.hasIPCLock:
		f.Severity, f.What = OK, run+"; CAP_IPC_LOCK exempts it from RLIMIT_MEMLOCK"
	case in.limitErr != nil:
		f.Severity, f.What = Warn, fmt.Sprintf("%s; cannot read RLIMIT_MEMLOCK: %v", run, in.limitErr)
	case in.limit == unix.RLIM_INFINITY:
		f.Severity, f.What = OK, run+"; RLIMIT_MEMLOCK is unlimited"
	case need > in.limit:
		f.Severity = Problem
		f.What = fmt.Sprintf("%s, over RLIMIT_MEMLOCK of %s, and the process lacks CAP_IPC_LOCK: registering the UMEM fails (%v)", run, size(in.limit), afxdp.ErrMemlock)
		f.Fix = fmt.Sprintf("run as root or with CAP_IPC_LOCK, raise the limit (ulimit -l %d, prlimit --memlock, or LimitMEMLOCK= in a systemd unit), or lower --frames / umem.frames", (need+1023)/1024)
	default:
		f.Severity, f.What = OK, fmt.Sprintf("%s, within RLIMIT_MEMLOCK of %s (the kernel counts all of this user's locked memory together)", run, size(in.limit))
	}
	return f
}

func size(b uint64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b >= 1<<20:
		return fmt.Sprintf("%.4g MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.4g KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", b)
}

// queuesToLock is how many UMEMs a run would map: one per queue it owns.
func queuesToLock(o Options) int {
	if o.Queues != nil {
		return len(o.Queues)
	}
	n := -1
	for _, iface := range o.Ifaces {
		if q, err := afxdp.QueueCount(iface); err == nil && (n < 0 || q < n) {
			n = q
		}
	}
	if n < 1 {
		return 1
	}
	return n
}

// heldInterfaces maps interfaces to the running netchan instance that runs on them.
func heldInterfaces(ctx context.Context, dir string) map[string]string {
	out := map[string]string{}
	names, _ := control.Running(dir)
	for _, name := range names {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := control.Fetch(cctx, dir, name)
		cancel()
		if err != nil {
			continue
		}
		var p struct {
			Interfaces []string `json:"interfaces"`
		}
		if ok, _ := st.Section("pipeline", &p); ok {
			for _, i := range p.Interfaces {
				out[i] = name
			}
		}
	}
	return out
}

func checkInterface(ctx context.Context, iface string, queues []int, held map[string]string, helper []string) []Finding {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return []Finding{{Check: "interface", Subject: iface, Severity: Problem,
			What: fmt.Sprintf("no interface %q in this network namespace (%v)", iface, err),
			Fix:  "check the name with `ip link`; run netchan in the namespace that holds the interface (ip netns exec NS netchan ...)"}}
	}
	a := link.Attrs()
	var fs []Finding
	up := Finding{Check: "link", Subject: iface, Severity: OK, What: fmt.Sprintf("%s link, %s", link.Type(), a.OperState)}
	if a.OperState != netlink.OperUp && a.OperState != netlink.OperUnknown {
		up.Severity, up.What = Warn, fmt.Sprintf("%s link is %s: nothing will arrive", link.Type(), a.OperState)
		up.Fix = fmt.Sprintf("ip link set dev %s up (and check the cable or the peer)", iface)
	}
	fs = append(fs, up)

	rx, _ := afxdp.QueueCount(iface)
	txq, _ := filepath.Glob(filepath.Join("/sys/class/net", iface, "queues", "tx-*"))
	q := Finding{Check: "queues", Subject: iface, Severity: OK,
		What: fmt.Sprintf("%d rx and %d tx queues: one shard per rx queue with --queues all", rx, len(txq))}
	for _, want := range queues {
		if want >= rx {
			q.Severity = Problem
			q.What = fmt.Sprintf("%d rx queues (0..%d), but queue %d was asked for (%v)", rx, rx-1, want, afxdp.ErrQueueOutOfRange)
			q.Fix = fmt.Sprintf("choose --queues within 0..%d, or add queues: ethtool -L %s rx N tx N (combined N on most NICs)", rx-1, iface)
			break
		}
	}
	fs = append(fs, q)

	x := Finding{Check: "xdp", Subject: iface, Severity: OK, What: "no XDP program attached"}
	if xa := a.Xdp; xa != nil && (xa.Attached || xa.ProgId != 0) {
		if inst, ok := held[iface]; ok {
			x.Severity, x.What = Info, fmt.Sprintf("XDP program id %d attached by the running netchan instance %q", xa.ProgId, inst)
		} else {
			x.Severity = Problem
			x.What = fmt.Sprintf("XDP program id %d is already attached and no running netchan instance holds it: netchan run on %s would fail (XDP program already attached)", xa.ProgId, iface)
			x.Fix = fmt.Sprintf("stop its owner (bpftool link and bpftool net show it), or if ip/netlink attached it: ip link set dev %s xdp off", iface)
		}
	}
	fs = append(fs, x)
	fs = append(fs, checkRSS(iface, rx))

	if link.Type() == "veth" {
		fs = append(fs, checkVethPeer(ctx, iface, link, helper)...)
	}
	return fs
}

// checkRSS says whether the device steers flows by an RSS hash netchan can model, and so which
// owner function netchan's stack runs (echo --rss auto).
func checkRSS(iface string, rxQueues int) Finding {
	queues := make([]int, max(rxQueues, 1))
	for i := range queues {
		queues[i] = i
	}
	r, why, err := rss.Detect(iface, queues)
	switch {
	case err != nil:
		return Finding{Check: "rss", Subject: iface, Severity: Warn, What: err.Error()}
	case r == nil:
		return Finding{Check: "rss", Subject: iface, Severity: Info, What: "RSS unavailable: " + why}
	}
	return Finding{Check: "rss", Subject: iface, Severity: OK, What: why}
}

// Busy-polling settings the doctor advises (docs/busy-poll.md): the values DPDK's AF_XDP
// driver documents for preferred busy polling.
const (
	adviseDeferIRQs = 2
	adviseGROFlush  = 200000 // ns
)

// busyPollInput is what checkBusyPoll decides on, read by readBusyPoll (or recorded, in tests).
type busyPollInput struct {
	iface  string
	kind   string // the netlink link type: "veth", "device", "bridge", ...
	driver string // the driver of /sys/class/net/IF/device; "" when the interface has no device
	// deferIRQs and groFlush are the contents of napi_defer_hard_irqs and gro_flush_timeout
	// (ns) in /sys/class/net/IF; "" when unreadable.
	deferIRQs, groFlush string
}

func readBusyPoll(iface, kind string) busyPollInput {
	in := busyPollInput{iface: iface, kind: kind}
	dir := filepath.Join("/sys/class/net", iface)
	if drv, err := filepath.EvalSymlinks(filepath.Join(dir, "device", "driver")); err == nil {
		in.driver = filepath.Base(drv)
	}
	in.deferIRQs = readTrim(filepath.Join(dir, "napi_defer_hard_irqs"))
	in.groFlush = readTrim(filepath.Join(dir, "gro_flush_timeout"))
	return in
}

// checkBusyPoll says whether busy polling can work on an interface and what it needs there.
// asked: a run would busy poll.
func checkBusyPoll(in busyPollInput, asked bool) Finding {
	f := Finding{Check: "busy-poll", Subject: in.iface, Severity: Info}
	worry := Info // what stands in the way of busy polling: a warning when a run asks for it
	if asked {
		worry = Warn
	}
	switch {
	case in.kind == "veth":
		f.Severity = worry
		f.What = fmt.Sprintf("busy polling unavailable: %s has no NAPI id to poll (veth: its AF_XDP sockets get none, in native or generic XDP, though veth runs NAPI of its own with XDP or GRO on): with busy polling on, netchan says so and runs its usual loop", in.iface)
		if asked {
			f.Fix = "leave busy polling off on veth; it needs a NIC in native XDP mode"
		}
		return f
	case in.driver == "":
		f.Severity = worry
		f.What = fmt.Sprintf("busy polling probably unavailable: %s is a %s device without a device of its own, so likely without a queue NAPI to poll; netchan status shows each queue's NAPI id once traffic flows", in.iface, in.kind)
		return f
	}
	deferIRQs, err1 := strconv.Atoi(in.deferIRQs)
	flush, err2 := strconv.Atoi(in.groFlush)
	fix := fmt.Sprintf("echo %d > /sys/class/net/%s/napi_defer_hard_irqs; echo %d > /sys/class/net/%s/gro_flush_timeout", adviseDeferIRQs, in.iface, adviseGROFlush, in.iface)
	switch {
	case err1 != nil || err2 != nil:
		f.Severity = worry
		f.What = fmt.Sprintf("%s (driver %s): cannot read napi_defer_hard_irqs (%q) and gro_flush_timeout (%q) from /sys/class/net/%s: this kernel may lack them (Linux 5.7 and later have both)", in.iface, in.driver, in.deferIRQs, in.groFlush, in.iface)
	case deferIRQs == 0 || flush == 0:
		f.Severity = worry
		f.What = fmt.Sprintf("%s (driver %s): napi_defer_hard_irqs %d, gro_flush_timeout %d ns: with busy polling on, the device's interrupts would still run its NAPI and race the shards' busy polls (busy polling needs native XDP too: generic XDP has no NAPI id)", in.iface, in.driver, deferIRQs, flush)
		f.Fix = fix + " (preferred busy polling keeps the interrupts off while the shards poll, and brings them back after gro_flush_timeout without a poll)"
	default:
		f.Severity = OK
		f.What = fmt.Sprintf("%s (driver %s): napi_defer_hard_irqs %d, gro_flush_timeout %d ns: preferred busy polling can keep the interrupts off while the shards poll (in native XDP mode; generic XDP has no NAPI id); netchan status counts what the polls bring (BusyPollRxPackets)", in.iface, in.driver, deferIRQs, flush)
	}
	return f
}

// peer is a veth's other end.
type peer struct {
	ns    string // named namespace, "" for this one
	name  string
	attrs *netlink.LinkAttrs
}

func (p peer) label() string {
	if p.ns == "" {
		return p.name
	}
	return fmt.Sprintf("%s (namespace %s)", p.name, p.ns)
}

func (p peer) command(argv ...string) []string {
	if p.ns == "" {
		return argv
	}
	return append([]string{"ip", "netns", "exec", p.ns}, argv...)
}

// findPeer locates a veth's peer, in this namespace or in a named one.
func findPeer(link netlink.Link) (peer, error) {
	a := link.Attrs()
	idx := a.ParentIndex
	if idx == 0 {
		if v, ok := link.(*netlink.Veth); ok {
			if i, err := netlink.VethPeerIndex(v); err == nil {
				idx = i
			}
		}
	}
	if idx == 0 {
		return peer{}, errors.New("the kernel did not say which link is the peer")
	}
	if a.NetNsID < 0 {
		pl, err := netlink.LinkByIndex(idx)
		if err != nil {
			return peer{}, fmt.Errorf("peer ifindex %d: %w", idx, err)
		}
		return peer{name: pl.Attrs().Name, attrs: pl.Attrs()}, nil
	}
	names, _ := filepath.Glob("/run/netns/*")
	for _, path := range names {
		h, err := netns.GetFromPath(path)
		if err != nil {
			continue
		}
		id, err := netlink.GetNetNsIdByFd(int(h))
		if err != nil || id != a.NetNsID {
			h.Close()
			continue
		}
		nh, err := netlink.NewHandleAt(h)
		h.Close()
		if err != nil {
			return peer{}, fmt.Errorf("opening namespace %s: %w", filepath.Base(path), err)
		}
		pl, err := nh.LinkByIndex(idx)
		nh.Close()
		if err != nil {
			return peer{}, fmt.Errorf("peer ifindex %d in namespace %s: %w", idx, filepath.Base(path), err)
		}
		return peer{ns: filepath.Base(path), name: pl.Attrs().Name, attrs: pl.Attrs()}, nil
	}
	return peer{}, fmt.Errorf("the peer (ifindex %d) is in a namespace with id %d that has no name under /run/netns", idx, a.NetNsID)
}

// offloads are the peer features that hurt netchan, with the ethtool -K word that turns each off.
var offloads = []struct{ feature, word, why string }{
	{"tx-checksumming", "tx", "the kernel sends TCP/UDP with PARTIAL checksums that look corrupt through AF_XDP (a stack drops them, a NAT forwards them broken)"},
	{"tcp-segmentation-offload", "tso", "TCP super-packets up to 64 KB do not fit a UMEM frame and are dropped in generic mode"},
	{"generic-segmentation-offload", "gso", "GSO super-packets up to 64 KB do not fit a UMEM frame and are dropped in generic mode"},
}

func checkVethPeer(ctx context.Context, iface string, link netlink.Link, helper []string) []Finding {
	p, err := findPeer(link)
	if err != nil {
		return []Finding{{Check: "veth-peer", Subject: iface, Severity: Warn,
			What: "cannot find the veth peer, so its offloads are not checked: " + err.Error(),
			Fix:  "check the peer by hand: ethtool -k PEER (inside its namespace) must show tx-checksumming, tcp-segmentation-offload and generic-segmentation-offload off"}}
	}
	var fs []Finding
	a := link.Attrs()
	if p.attrs.NumTxQueues > a.NumRxQueues {
		fs = append(fs, Finding{Check: "veth-queues", Subject: iface, Severity: Warn,
			What: fmt.Sprintf("peer %s has %d tx queues but %s has %d rx queues: native XDP is refused (ENOSPC), auto mode falls back to generic", p.label(), p.attrs.NumTxQueues, iface, a.NumRxQueues),
			Fix:  "create the veth pair with equal queue counts (ip link add ... numtxqueues N numrxqueues N)"})
	}
	if p.attrs.MTU > 3506 {
		fs = append(fs, Finding{Check: "veth-mtu", Subject: iface, Severity: Warn,
			What: fmt.Sprintf("peer %s has MTU %d: native XDP on veth without multi-buffer needs the peer's MTU ≤ 3506", p.label(), p.attrs.MTU),
			Fix:  strings.Join(p.command("ip", "link", "set", "dev", p.name, "mtu", "1500"), " ")})
	}
	feats, err := peerOffloads(ctx, p, helper)
	if err != nil {
		return append(fs, Finding{Check: "offload", Subject: iface, Severity: Warn,
			What: fmt.Sprintf("cannot read the offloads of the veth peer %s: %v", p.label(), err),
			Fix:  "check the peer by hand: " + strings.Join(p.command("ethtool", "-k", p.name), " ") + " must show tx-checksumming, tcp-segmentation-offload and generic-segmentation-offload off"})
	}
	var on []string
	for _, o := range offloads {
		if feats[o.feature] {
			on = append(on, o.word)
			fs = append(fs, Finding{Check: "offload", Subject: iface, Severity: Warn,
				What: fmt.Sprintf("%s is on at the veth peer %s: %s", o.feature, p.label(), o.why),
				Fix:  strings.Join(p.command("ethtool", "-K", p.name, o.word, "off"), " ")})
		}
	}
	if len(on) == 0 {
		fs = append(fs, Finding{Check: "offload", Subject: iface, Severity: OK,
			What: fmt.Sprintf("veth peer %s: transmit checksum offload, TSO and GSO are off", p.label())})
	}
	return fs
}

// peerOffloads reads p's offloads (by `ethtool -k` name): through the ethtool ioctl when p is
// in this namespace, otherwise from helper run inside p's namespace.
func peerOffloads(ctx context.Context, p peer, helper []string) (map[string]bool, error) {
	if p.ns == "" {
		return lab.Offloads(p.name)
	}
	if len(helper) == 0 {
		return nil, errors.New("no helper to run in its namespace (cannot find this executable)")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	argv := append(p.command(helper...), p.name)
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("`%s`: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	feats := parseFeatures(string(out))
	if len(feats) == 0 {
		return nil, fmt.Errorf("`%s` printed no offloads", strings.Join(argv, " "))
	}
	return feats, nil
}

// WriteOffloads writes iface's offloads (iface in this process's namespace), read through the
// ethtool ioctl, as `ethtool -k` lines ("tx-checksumming: off"): what the doctor's helper
// prints inside a peer's namespace.
func WriteOffloads(w io.Writer, iface string) error {
	m, err := lab.Offloads(iface)
	if err != nil {
		return err
	}
	for _, name := range lab.OffloadNames() {
		if on, ok := m[name]; ok {
			state := "off"
			if on {
				state = "on"
			}
			if _, err := fmt.Fprintf(w, "%s: %s\n", name, state); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseFeatures reads `ethtool -k`-style output into feature → on.
func parseFeatures(out string) map[string]bool {
	m := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		name, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		m[name] = val == "on" || strings.HasPrefix(val, "on ")
	}
	return m
}
