package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/netchan/netchan/bench/sysstat"
)

// What `netchan bench rr` reads from /proc besides bench/sysstat: every CPU's line of
// /proc/stat, TCP counters of the reader's namespace, and the run time of other processes.

// machineCPUs lists the CPUs /proc/stat has a line for (every online CPU of the machine,
// whatever this process's affinity).
func machineCPUs() ([]int, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	var cpus []int
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		if n, err := strconv.Atoi(f[0][3:]); err == nil {
			cpus = append(cpus, n)
		}
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("/proc/stat lists no CPU")
	}
	return cpus, nil
}

// TCPSNMP are the TCP counters of /proc/net/snmp, which shows the namespace of the process
// that reads it.
type TCPSNMP struct {
	ActiveOpens  uint64 `json:"active_opens"`
	PassiveOpens uint64 `json:"passive_opens"`
	InSegs       uint64 `json:"in_segs"`
	OutSegs      uint64 `json:"out_segs"`
	RetransSegs  uint64 `json:"retrans_segs"`
	InErrs       uint64 `json:"in_errs"`
	OutRsts      uint64 `json:"out_rsts"`
}

func (t TCPSNMP) sub(o TCPSNMP) TCPSNMP {
	return TCPSNMP{t.ActiveOpens - o.ActiveOpens, t.PassiveOpens - o.PassiveOpens, t.InSegs - o.InSegs,
		t.OutSegs - o.OutSegs, t.RetransSegs - o.RetransSegs, t.InErrs - o.InErrs, t.OutRsts - o.OutRsts}
}

func readTCPSNMP() (TCPSNMP, error) {
	m, err := sysstat.ReadSNMP("Tcp")
	if err != nil {
		return TCPSNMP{}, err
	}
	return TCPSNMP{ActiveOpens: m["ActiveOpens"], PassiveOpens: m["PassiveOpens"], InSegs: m["InSegs"],
		OutSegs: m["OutSegs"], RetransSegs: m["RetransSegs"], InErrs: m["InErrs"], OutRsts: m["OutRsts"]}, nil
}

// taskTimes is the run time (schedstat) of every thread of the machine's processes, split into
// user-space processes other than the ones excluded (other people's work, as far as it is
// still alive when the window closes: RRRun.ForeignSeen) and kernel threads (softirq threads,
// kworkers, NAPI threads: mostly the lab's own packet work, counted as the run's own).
type taskTimes struct {
	foreign map[int]int64 // tid → run ns
	kernel  map[int]int64
}

// pfKthread is PF_KTHREAD in the flags field of /proc/PID/stat.
const pfKthread = 0x00200000

func readTaskTimes(exclude ...int) taskTimes {
	t := taskTimes{foreign: map[int]int64{}, kernel: map[int]int64{}}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return t
	}
	skip := map[int]bool{}
	for _, p := range exclude {
		skip[p] = true
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] {
			continue
		}
		kthread, ok := isKthread(pid)
		if !ok {
			continue
		}
		m := t.foreign
		if kthread {
			m = t.kernel
		}
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			continue
		}
		for _, te := range tasks {
			tid, err := strconv.Atoi(te.Name())
			if err != nil {
				continue
			}
			if ns := sysstat.RunNs(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid)); ns > 0 {
				m[tid] = ns
			}
		}
	}
	return t
}

// isKthread reads the flags of /proc/PID/stat; ok is false if the process is gone.
func isKthread(pid int) (kthread, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false, false
	}
	// The command name is in parentheses and may hold spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 7 {
		return false, false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64) // state ppid pgrp session tty_nr tpgid flags
	if err != nil {
		return false, false
	}
	return flags&pfKthread != 0, true
}

// since returns the run time of the threads in b since a; a thread that appeared in between
// counts with all of its run time (it started inside the window), one that ended is lost.
func since(a, b map[int]int64) int64 {
	var sum int64
	for tid, ns := range b {
		if d := ns - a[tid]; d > 0 {
			sum += d
		}
	}
	return sum
}

// cpuSum adds the CPU lines of /proc/stat.
func cpuSum(m map[int]sysstat.CPUTimes) sysstat.CPUTimes {
	var s sysstat.CPUTimes
	for _, c := range m {
		s = s.Add(c)
	}
	return s
}
