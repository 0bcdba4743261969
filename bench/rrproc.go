package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// What `netchan bench tcp-rr` and `netchan bench http` read from /proc besides bench/sysstat:
// every CPU's line of /proc/stat, TCP counters of the reader's namespace, and the run time of
// other processes; and how they confine their server process to the server's CPUs.

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

// quietMachine waits, up to wait, for one second in which the machine (every CPU) is less
// than maxBusy busy, and returns the last second's busy share and the time it waited. Other
// people's work comes in bursts; a run started in a quiet second is less likely to share the
// machine. A negative wait does not wait.
func quietMachine(ctx context.Context, cpus []int, maxBusy float64, wait time.Duration, logf func(string, ...any)) (float64, time.Duration, error) {
	start := time.Now()
	if wait < 0 {
		return 0, 0, nil
	}
	for {
		c0, err := sysstat.ReadCPUTimes(cpus...)
		if err != nil {
			return 0, 0, err
		}
		t0 := time.Now()
		if err := sleepCtx(ctx, time.Second); err != nil {
			return 0, 0, err
		}
		c1, err := sysstat.ReadCPUTimes(cpus...)
		if err != nil {
			return 0, 0, err
		}
		d := map[int]sysstat.CPUTimes{}
		for cpu, t := range c1 {
			d[cpu] = t.Sub(c0[cpu])
		}
		busy := float64(cpuSum(d).Busy()) / (float64(time.Since(t0)) * float64(len(cpus)))
		waited := time.Since(start)
		if busy < maxBusy || waited >= wait {
			if busy >= maxBusy {
				logf("bench: the machine stayed %.0f%% busy for %v; running anyway", 100*busy, wait)
			}
			return busy, waited, nil
		}
	}
}

// pinServer confines every thread of this process to cpus and sets GOMAXPROCS to procs (0:
// one per CPU, what the runtime gives a process started on those CPUs, e.g. under taskset),
// for the length of one server run. A goroutine cannot be pinned, and net/http runs its
// handlers on whatever thread the scheduler picks, so the process is pinned as taskset would
// pin a server of its own; threads made later are cloned from pinned ones (the runtime's
// template thread included) and keep the mask. restore puts back the affinity and GOMAXPROCS
// it found; call it after the server has stopped (a shard's thread restores its own mask
// when it unpins, and restore must not widen a shard that still runs).
func pinServer(cpus []int, procs int) (restore func() error, err error) {
	before := trafficgen.ProcessCPUs()
	if len(before) == 0 {
		return nil, errors.New("reading this process's CPU affinity")
	}
	if procs <= 0 {
		procs = len(cpus)
	}
	prevProcs := runtime.GOMAXPROCS(procs)
	restore = func() error {
		runtime.GOMAXPROCS(prevProcs)
		return pinAllThreads(before)
	}
	if err := pinAllThreads(cpus); err != nil {
		return nil, errors.Join(err, restore())
	}
	return restore, nil
}

// pinAllThreads sets every thread's mask to cpus. A thread cloned during the pass from one not
// yet pinned keeps the old mask, so the pass repeats until no thread is left outside cpus.
func pinAllThreads(cpus []int) error {
	for range 4 {
		if err := trafficgen.PinProcess(cpus); err != nil {
			return err
		}
		if off, _ := threadsOutside(cpus); off == 0 {
			return nil
		}
	}
	off, total := threadsOutside(cpus)
	return fmt.Errorf("%d of %d threads of this process stay outside CPUs %v", off, total, cpus)
}

// threadsOutside counts this process's threads whose affinity mask allows a CPU that is not
// in cpus, and all of its threads (a thread that ended while they were read counts in neither).
func threadsOutside(cpus []int) (off, total int) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, 0
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			continue
		}
		total++
		for c := 0; c < 1024; c++ {
			if set.IsSet(c) && !slices.Contains(cpus, c) {
				off++
				break
			}
		}
	}
	return off, total
}
