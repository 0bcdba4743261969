package natbench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/stat.
const userHZ = 100

// cpuTimes is one CPU's line of /proc/stat, in nanoseconds.
type cpuTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal int64
}

// Busy is the time the CPU ran anything: user, system (kernel threads such as threaded NAPI
// included), interrupts and softirqs; steal is not busy.
func (c cpuTimes) Busy() int64 { return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ }

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{c.User - o.User, c.Nice - o.Nice, c.System - o.System, c.Idle - o.Idle,
		c.IOWait - o.IOWait, c.IRQ - o.IRQ, c.SoftIRQ - o.SoftIRQ, c.Steal - o.Steal}
}

// readCPU reads CPU cpu's line of /proc/stat.
func readCPU(cpu int) (cpuTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	defer f.Close()
	want := "cpu" + strconv.Itoa(cpu)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 9 || fs[0] != want {
			continue
		}
		var v [8]int64
		for i := range v {
			n, err := strconv.ParseInt(fs[i+1], 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("/proc/stat %s: %w", fs[0], err)
			}
			v[i] = n * int64(time.Second/userHZ)
		}
		return cpuTimes{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}, nil
	}
	if err := sc.Err(); err != nil {
		return cpuTimes{}, err
	}
	return cpuTimes{}, fmt.Errorf("/proc/stat has no line for CPU %d", cpu)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// runNs is the CPU time a task has run (first field of /proc/PID/schedstat); 0 if it is gone.
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

func threadsRunNs(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		sum += runNs(fmt.Sprintf("/proc/%d/schedstat", p))
	}
	return sum
}

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
