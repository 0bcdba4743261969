// Package sysstat reads what the benchmarks measure from the kernel: CPU time per core from
// /proc/stat, run time of threads from /proc, UDP counters, and interface counters inside a
// namespace through netlink.
package sysstat

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// UserHZ is the unit of /proc/stat (USER_HZ, 100 on every Linux ABI netchan runs on).
const UserHZ = 100

// CPUTimes is one CPU's line of /proc/stat, in nanoseconds.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal int64
}

// Busy is the time the CPU ran anything (user, system, interrupts, softirqs and kernel
// threads such as threaded NAPI); steal (the hypervisor ran someone else) is not busy.
func (c CPUTimes) Busy() int64 { return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ }

// Add is the sum of two CPUs' times (or of two windows).
func (c CPUTimes) Add(o CPUTimes) CPUTimes {
	return CPUTimes{c.User + o.User, c.Nice + o.Nice, c.System + o.System, c.Idle + o.Idle,
		c.IOWait + o.IOWait, c.IRQ + o.IRQ, c.SoftIRQ + o.SoftIRQ, c.Steal + o.Steal}
}

func (c CPUTimes) Sub(o CPUTimes) CPUTimes {
	return CPUTimes{c.User - o.User, c.Nice - o.Nice, c.System - o.System, c.Idle - o.Idle,
		c.IOWait - o.IOWait, c.IRQ - o.IRQ, c.SoftIRQ - o.SoftIRQ, c.Steal - o.Steal}
}

// ReadCPUTimes reads the lines of the given CPUs from /proc/stat.
func ReadCPUTimes(cpus ...int) (map[int]CPUTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := map[string]int{}
	for _, c := range cpus {
		want["cpu"+strconv.Itoa(c)] = c
	}
	out := map[int]CPUTimes{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 9 {
			continue
		}
		c, ok := want[fs[0]]
		if !ok {
			continue
		}
		var v [8]int64
		for i := range v {
			n, err := strconv.ParseInt(fs[i+1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat %s: %w", fs[0], err)
			}
			v[i] = n * int64(time.Second/UserHZ)
		}
		out[c] = CPUTimes{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
	}
	for _, c := range cpus {
		if _, ok := out[c]; !ok {
			return nil, fmt.Errorf("/proc/stat has no line for CPU %d", c)
		}
	}
	return out, sc.Err()
}

// Loadavg is /proc/loadavg without its newline.
func Loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// UDPStats are the root namespace's UDP counters (/proc/net/snmp).
type UDPStats struct {
	InDatagrams, NoPorts, InErrors, OutDatagrams, RcvbufErrors, SndbufErrors uint64
}

func ReadUDPStats() (UDPStats, error) {
	m, err := ReadSNMP("Udp")
	if err != nil {
		return UDPStats{}, err
	}
	return UDPStats{InDatagrams: m["InDatagrams"], NoPorts: m["NoPorts"], InErrors: m["InErrors"],
		OutDatagrams: m["OutDatagrams"], RcvbufErrors: m["RcvbufErrors"], SndbufErrors: m["SndbufErrors"]}, nil
}

// ReadSNMP reads one protocol's counters ("Udp", "Tcp", …) from /proc/net/snmp, which shows
// the network namespace of the reading process: a header line of names, then a line of values.
func ReadSNMP(proto string) (map[string]uint64, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return nil, err
	}
	var names, vals []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, proto+": ") {
			continue
		}
		if names == nil {
			names = strings.Fields(line)[1:]
		} else {
			vals = strings.Fields(line)[1:]
		}
	}
	m := make(map[string]uint64, len(names))
	for i, n := range names {
		if i >= len(vals) {
			break
		}
		m[n], _ = strconv.ParseUint(vals[i], 10, 64)
	}
	return m, nil
}

// IfStats are an interface's kernel counters.
type IfStats struct {
	RxPackets uint64 `json:"rx_packets"`
	RxDropped uint64 `json:"rx_dropped"`
	TxPackets uint64 `json:"tx_packets"`
	TxDropped uint64 `json:"tx_dropped"`
}

func (s IfStats) Sub(o IfStats) IfStats {
	return IfStats{s.RxPackets - o.RxPackets, s.RxDropped - o.RxDropped, s.TxPackets - o.TxPackets, s.TxDropped - o.TxDropped}
}

// NSLinks reads interface counters in one network namespace through a netlink handle opened
// on it, so no thread of ours ever changes namespace.
type NSLinks struct {
	h  *netlink.Handle
	fd netns.NsHandle
}

func OpenNS(ns string) (*NSLinks, error) {
	if ns == "" {
		h, err := netlink.NewHandle()
		return &NSLinks{h: h, fd: -1}, err
	}
	fd, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		fd.Close()
		return nil, err
	}
	return &NSLinks{h: h, fd: fd}, nil
}

func (n *NSLinks) Stats(iface string) (IfStats, error) {
	l, err := n.h.LinkByName(iface)
	if err != nil {
		return IfStats{}, err
	}
	s := l.Attrs().Statistics
	if s == nil {
		return IfStats{}, fmt.Errorf("%s: no statistics", iface)
	}
	return IfStats{s.RxPackets, s.RxDropped, s.TxPackets, s.TxDropped}, nil
}

func (n *NSLinks) Close() {
	n.h.Close()
	if n.fd >= 0 {
		n.fd.Close()
	}
}

// RunNs is the CPU time a task has run (first field of /proc/PID/schedstat), in nanoseconds;
// 0 if it is gone.
func RunNs(path string) int64 {
	ns, _ := Sched(path)
	return ns
}

// Sched reads a task's /proc/PID/schedstat: the CPU time it has run, in nanoseconds, and
// the number of times it was scheduled in (timeslices: every wake-up counts one); zeros if
// it is gone.
func Sched(path string) (runNs, slices int64) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, 0
	}
	runNs, _ = strconv.ParseInt(f[0], 10, 64)
	if len(f) >= 3 {
		slices, _ = strconv.ParseInt(f[2], 10, 64)
	}
	return runNs, slices
}

// ThreadsSlices sums the timeslices (times scheduled in) of the given kernel threads, and
// ProcessSlices those of every live thread of this process.
func ThreadsSlices(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		_, n := Sched(fmt.Sprintf("/proc/%d/schedstat", p))
		sum += n
	}
	return sum
}

// ProcessSlices: see ThreadsSlices.
func ProcessSlices() int64 {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	var sum int64
	for _, e := range ents {
		_, n := Sched("/proc/self/task/" + e.Name() + "/schedstat")
		sum += n
	}
	return sum
}

// ThreadsRunNs sums the run time of the given kernel threads (NAPI threads).
func ThreadsRunNs(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		sum += RunNs(fmt.Sprintf("/proc/%d/schedstat", p))
	}
	return sum
}

// PIDRunNs sums the run time of every live thread of process pid; 0 if it is gone.
func PIDRunNs(pid int) int64 {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum int64
	for _, e := range ents {
		sum += RunNs(dir + "/" + e.Name() + "/schedstat")
	}
	return sum
}

// ProcessRunNs sums the run time of every live thread of this process (the receivers run here).
func ProcessRunNs() int64 {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	var sum int64
	for _, e := range ents {
		sum += RunNs("/proc/self/task/" + e.Name() + "/schedstat")
	}
	return sum
}
