package trafficgen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// By default veth does its receive work in the softirq of the sending CPU, so on a small
// machine the sender pays for the receiver. Threaded NAPI gives each receive queue of a veth
// (once XDP is attached or GRO is on, when the veth has NAPI at all) a kernel thread
// "napi/IF-ID" that can be pinned like any thread; the threads are recreated whenever the veth
// rebuilds its NAPI (XDP attach and detach, GRO on and off), so pin them again after each.

// SetThreadedNAPI writes 1 to /sys/class/net/IF/threaded (of the caller's network namespace:
// inside `ip netns exec` sysfs shows the namespace's interfaces).
func SetThreadedNAPI(iface string) error {
	p := filepath.Join("/sys/class/net", iface, "threaded")
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("threaded NAPI on %s: %w (veth has NAPI only with XDP attached or GRO on)", iface, err)
	}
	return nil
}

// NAPIThreads returns the process ids of the kernel threads "napi/IF-*". Thread names are cut
// at 15 bytes, so an interface name longer than 9 bytes cannot be told apart reliably.
func NAPIThreads(iface string) ([]int, error) {
	prefix := "napi/" + iface + "-"
	if len(prefix) > 15 {
		return nil, fmt.Errorf("interface name %q is too long to find its NAPI threads (comm holds 15 bytes)", iface)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(string(b)), prefix) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// PinNAPIThreads pins every NAPI thread of iface to cpus and returns their ids; it fails if
// there is none (threaded NAPI off, or no NAPI).
func PinNAPIThreads(iface string, cpus []int) ([]int, error) {
	pids, err := NAPIThreads(iface)
	if err != nil {
		return nil, err
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no NAPI thread for %s: turn threaded NAPI on after XDP attach or GRO on", iface)
	}
	set := cpuSet(cpus)
	for _, pid := range pids {
		if err := unix.SchedSetaffinity(pid, &set); err != nil {
			return pids, fmt.Errorf("pinning NAPI thread %d of %s to CPUs %v: %w", pid, iface, cpus, err)
		}
	}
	return pids, nil
}

// PinProcess restricts every thread of this process to cpus. Threads the Go runtime starts later
// are cloned from threads that already carry the mask, so the whole process stays there.
func PinProcess(cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	set := cpuSet(cpus)
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pinning the process to CPUs %v: %w", cpus, err)
	}
	return nil
}

// ProcessCPUs is this process's affinity mask as a list.
func ProcessCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var out []int
	for c := 0; c < 1024; c++ {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out
}

func cpuSet(cpus []int) unix.CPUSet {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	return set
}

// ParseCPUList reads "0", "0,2" or "0-3".
func ParseCPUList(s string) ([]int, error) {
	var out []int
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("CPU list %q: %q is not a CPU number", s, f)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("CPU list %q: bad range %q", s, f)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}

// FormatCPUList writes cpus as "0,2,3".
func FormatCPUList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}
