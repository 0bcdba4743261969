package bench

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

// userHZ is the unit of /proc/stat (USER_HZ, 100 on every Linux ABI netchan runs on).
const userHZ = 100

// cpuTimes is one CPU's line of /proc/stat, in nanoseconds.
type cpuTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal int64
}

// Busy is the time the CPU ran anything (user, system, interrupts, softirqs and kernel
// threads such as threaded NAPI); steal (the hypervisor ran someone else) is not busy.
func (c cpuTimes) Busy() int64 { return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ }

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{c.User - o.User, c.Nice - o.Nice, c.System - o.System, c.Idle - o.Idle,
		c.IOWait - o.IOWait, c.IRQ - o.IRQ, c.SoftIRQ - o.SoftIRQ, c.Steal - o.Steal}
}

// readCPUTimes reads the lines of the given CPUs from /proc/stat.
func readCPUTimes(cpus ...int) (map[int]cpuTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := map[string]int{}
	for _, c := range cpus {
		want["cpu"+strconv.Itoa(c)] = c
	}
	out := map[int]cpuTimes{}
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
			v[i] = n * int64(time.Second/userHZ)
		}
		out[c] = cpuTimes{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
	}
	for _, c := range cpus {
		if _, ok := out[c]; !ok {
			return nil, fmt.Errorf("/proc/stat has no line for CPU %d", c)
		}
	}
	return out, sc.Err()
}

// loadavg is /proc/loadavg without its newline.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// udpStats are the root namespace's UDP counters (/proc/net/snmp).
type udpStats struct {
	InDatagrams, NoPorts, InErrors, OutDatagrams, RcvbufErrors, SndbufErrors uint64
}

func readUDPStats() (udpStats, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return udpStats{}, err
	}
	var names, vals []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		if names == nil {
			names = strings.Fields(line)[1:]
		} else {
			vals = strings.Fields(line)[1:]
		}
	}
	var u udpStats
	for i, n := range names {
		if i >= len(vals) {
			break
		}
		v, _ := strconv.ParseUint(vals[i], 10, 64)
		switch n {
		case "InDatagrams":
			u.InDatagrams = v
		case "NoPorts":
			u.NoPorts = v
		case "InErrors":
			u.InErrors = v
		case "OutDatagrams":
			u.OutDatagrams = v
		case "RcvbufErrors":
			u.RcvbufErrors = v
		case "SndbufErrors":
			u.SndbufErrors = v
		}
	}
	return u, nil
}

// ifStats are an interface's kernel counters.
type ifStats struct {
	RxPackets uint64 `json:"rx_packets"`
	RxDropped uint64 `json:"rx_dropped"`
	TxPackets uint64 `json:"tx_packets"`
	TxDropped uint64 `json:"tx_dropped"`
}

func (s ifStats) sub(o ifStats) ifStats {
	return ifStats{s.RxPackets - o.RxPackets, s.RxDropped - o.RxDropped, s.TxPackets - o.TxPackets, s.TxDropped - o.TxDropped}
}

// nsLinks reads interface counters in one network namespace through a netlink handle opened
// on it, so no thread of ours ever changes namespace.
type nsLinks struct {
	h  *netlink.Handle
	fd netns.NsHandle
}

func openNS(ns string) (*nsLinks, error) {
	if ns == "" {
		h, err := netlink.NewHandle()
		return &nsLinks{h: h, fd: -1}, err
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
	return &nsLinks{h: h, fd: fd}, nil
}

func (n *nsLinks) stats(iface string) (ifStats, error) {
	l, err := n.h.LinkByName(iface)
	if err != nil {
		return ifStats{}, err
	}
	s := l.Attrs().Statistics
	if s == nil {
		return ifStats{}, fmt.Errorf("%s: no statistics", iface)
	}
	return ifStats{s.RxPackets, s.RxDropped, s.TxPackets, s.TxDropped}, nil
}

func (n *nsLinks) close() {
	n.h.Close()
	if n.fd >= 0 {
		n.fd.Close()
	}
}

// runNs is the CPU time a task has run (first field of /proc/PID/schedstat), in nanoseconds;
// 0 if it is gone.
func runNs(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n
}

// threadsRunNs sums the run time of the given kernel threads (NAPI threads).
func threadsRunNs(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		sum += runNs(fmt.Sprintf("/proc/%d/schedstat", p))
	}
	return sum
}

// processRunNs sums the run time of every live thread of this process (the receivers run here).
func processRunNs() int64 {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	var sum int64
	for _, e := range ents {
		sum += runNs("/proc/self/task/" + e.Name() + "/schedstat")
	}
	return sum
}
