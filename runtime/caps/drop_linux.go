//go:build linux

package caps

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DropTo drops the process, on every one of its threads, to the capabilities of keep that it
// holds, for good; it returns the set kept. Capabilities are per thread on Linux, so a change
// made on one thread leaves the others as privileged as before: DropTo makes the same change
// on all of them, and on threads started later (they inherit it). On each thread it
//
//   - drops from the bounding set every capability it does not keep, so that no program the
//     process runs can get one back (this needs CAP_SETPCAP: without it, as in a container
//     that grants only what netchan needs, the bounding set stays as it is);
//   - clears the ambient set and sets no_new_privs (setuid and file capabilities no longer
//     raise the privileges of a program the process runs);
//   - sets the permitted and effective sets to the capabilities kept, and the inheritable set
//     to none.
//
// The change is made with syscall.AllThreadsSyscall where the binary has no cgo; a binary
// with cgo (go build's default when a C compiler is present: the net package's resolver links
// runtime/cgo), where the runtime refuses AllThreadsSyscall, makes each thread do it from a
// signal handler written in C (allthreads_cgo.go), borrowing a real-time signal
// (SIGRTMAX-7..SIGRTMAX) for the moment.
// Either way DropTo reads every thread's status back afterwards and returns an error unless
// each has exactly the sets asked for: a caller should not run on after such an error, as
// some threads may have dropped and others not.
func DropTo(keep ...Cap) (Set, error) {
	before, err := Threads(0)
	if err != nil {
		return 0, err
	}
	cur := before[0]
	for _, t := range before[1:] {
		if t.Permitted != cur.Permitted || t.Effective != cur.Effective || t.Bounding != cur.Bounding ||
			t.Ambient != cur.Ambient || t.Inheritable != cur.Inheritable || t.NoNewPrivs != cur.NoNewPrivs {
			return 0, fmt.Errorf("caps: the threads of the process hold different capabilities (thread %d: effective %s; thread %d: effective %s): not dropping",
				before[0].TID, cur.Effective, t.TID, t.Effective)
		}
	}
	p := newPlan(cur, SetOf(keep...), lastCap(cur))
	if err := p.run(); err != nil {
		return 0, err
	}
	return p.target, p.check()
}

// Threads reads the capability sets of every thread of process pid (0: this process) from
// /proc/PID/task/*/status, in thread-ID order.
func Threads(pid int) ([]Thread, error) {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = fmt.Sprintf("/proc/%d/task", pid)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("caps: listing the threads: %w", err)
	}
	var out []Thread
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status"))
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // the thread has exited
		}
		if err != nil {
			return nil, fmt.Errorf("caps: thread %d: %w", tid, err)
		}
		t, err := ParseStatus(string(b))
		if err != nil {
			return nil, fmt.Errorf("caps: thread %d: %w", tid, err)
		}
		t.TID = tid
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("caps: %s lists no threads", dir)
	}
	slices.SortFunc(out, func(a, b Thread) int { return a.TID - b.TID })
	return out, nil
}

// lastCap is the highest capability the kernel knows.
func lastCap(cur Thread) uint {
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			return uint(n)
		}
	}
	last := uint(0)
	for b := uint(0); b < 64; b++ {
		if cur.Bounding.Has(b) {
			last = b
		}
	}
	return last
}

// step is one system call every thread makes.
type step struct {
	what   string
	nr     uintptr
	args   [6]uintptr
	capset bool // the capset of the plan (its arguments point at the plan's header and data)
}

// plan is what DropTo does on each thread, and what each thread looks like after it.
type plan struct {
	steps        []step
	hdr          unix.CapUserHeader
	data         [2]unix.CapUserData
	target       Set // permitted and effective after
	bounding     Set // the bounding set after
	dropBounding bool
}

func newPlan(cur Thread, keep Set, last uint) *plan {
	p := &plan{target: keep & cur.Permitted, bounding: cur.Bounding}
	if cur.Effective.Has(SetPCap) {
		p.dropBounding = true
		p.bounding &= p.target
		for b := uint(0); b <= last; b++ {
			if cur.Bounding.Has(b) && !p.target.Has(b) {
				p.steps = append(p.steps, step{what: "dropping " + Name(b) + " from the bounding set", nr: unix.SYS_PRCTL, args: [6]uintptr{unix.PR_CAPBSET_DROP, uintptr(b)}})
			}
		}
	}
	if cur.Ambient != 0 {
		p.steps = append(p.steps, step{what: "clearing the ambient set", nr: unix.SYS_PRCTL, args: [6]uintptr{unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL}})
	}
	if !cur.NoNewPrivs {
		p.steps = append(p.steps, step{what: "setting no_new_privs", nr: unix.SYS_PRCTL, args: [6]uintptr{unix.PR_SET_NO_NEW_PRIVS, 1}})
	}
	p.hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	p.data[0] = unix.CapUserData{Effective: uint32(p.target), Permitted: uint32(p.target)}
	p.data[1] = unix.CapUserData{Effective: uint32(p.target >> 32), Permitted: uint32(p.target >> 32)}
	p.steps = append(p.steps, step{what: "capset", nr: unix.SYS_CAPSET, capset: true})
	return p
}

// done reports whether thread t looks as the plan leaves it.
func (p *plan) done(t Thread) bool {
	return t.Effective == p.target && t.Permitted == p.target && t.Inheritable == 0 && t.Ambient == 0 &&
		t.NoNewPrivs && t.Bounding == p.bounding
}

// run makes every thread take the plan's steps.
func (p *plan) run() error {
	for i, s := range p.steps {
		a := s.args
		if s.capset {
			a = [6]uintptr{uintptr(unsafe.Pointer(&p.hdr)), uintptr(unsafe.Pointer(&p.data[0]))}
		}
		_, _, errno := syscall.AllThreadsSyscall6(s.nr, a[0], a[1], a[2], a[3], a[4], a[5])
		runtime.KeepAlive(p)
		if errno == syscall.ENOTSUP && i == 0 {
			if broadcast == nil {
				return errors.New("caps: this binary cannot change the capabilities of all its threads (syscall.AllThreadsSyscall refuses, and no other way was built in)")
			}
			return broadcast(p)
		}
		if errno != 0 {
			if i == 0 {
				return fmt.Errorf("caps: %s: %w", s.what, errno)
			}
			return fmt.Errorf("caps: %s: %w (after the earlier steps on every thread)", s.what, errno)
		}
	}
	return nil
}

// check reads every thread back and returns an error naming those that do not look as the
// plan leaves them.
func (p *plan) check() error {
	ts, err := Threads(0)
	if err != nil {
		return err
	}
	var bad []string
	for _, t := range ts {
		if !p.done(t) {
			bad = append(bad, fmt.Sprintf("thread %d (effective %s, permitted %s, ambient %s, no_new_privs %v)", t.TID, t.Effective, t.Permitted, t.Ambient, t.NoNewPrivs))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("caps: after dropping to %s, %d of %d threads are not: %s", p.target, len(bad), len(ts), strings.Join(bad, "; "))
	}
	return nil
}
