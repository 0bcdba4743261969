//go:build linux && cgo

package caps

/*
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

// The steps every thread takes, in C memory: the handler runs them on whichever thread the
// signal interrupts, Go code or not.
#define NC_MAX_STEPS 96
typedef struct { long nr, a[6]; } nc_step;
static nc_step nc_steps[NC_MAX_STEPS];
static int nc_nsteps;
static unsigned int nc_caphdr[2];  // struct __user_cap_header_struct: version, pid (0: this thread)
static unsigned int nc_capdata[6]; // struct __user_cap_data_struct[2]: effective, permitted, inheritable
static int nc_err;                 // the first errno a thread met, 0 while none did
static struct sigaction nc_old;

static void nc_handler(int sig, siginfo_t *si, void *uc) {
	int saved = errno;
	for (int i = 0; i < nc_nsteps; i++) {
		nc_step *s = &nc_steps[i];
		if (syscall(s->nr, s->a[0], s->a[1], s->a[2], s->a[3], s->a[4], s->a[5]) < 0) {
			__sync_bool_compare_and_swap(&nc_err, 0, errno);
			break;
		}
	}
	errno = saved;
}

static void nc_reset(void) { nc_nsteps = 0; nc_err = 0; }

static int nc_add(long nr, long a0, long a1, long a2, long a3, long a4, long a5) {
	if (nc_nsteps == NC_MAX_STEPS) return -1;
	nc_step *s = &nc_steps[nc_nsteps++];
	s->nr = nr; s->a[0] = a0; s->a[1] = a1; s->a[2] = a2; s->a[3] = a3; s->a[4] = a4; s->a[5] = a5;
	return 0;
}

static int nc_add_capset(unsigned int version, unsigned int e0, unsigned int p0, unsigned int i0,
		unsigned int e1, unsigned int p1, unsigned int i1) {
	nc_caphdr[0] = version; nc_caphdr[1] = 0;
	nc_capdata[0] = e0; nc_capdata[1] = p0; nc_capdata[2] = i0;
	nc_capdata[3] = e1; nc_capdata[4] = p1; nc_capdata[5] = i1;
	return nc_add(SYS_capset, (long)nc_caphdr, (long)nc_capdata, 0, 0, 0, 0);
}

// nc_install makes sig run the steps, on the thread's signal stack (every Go thread has one),
// keeping the handler it replaces for nc_restore.
static int nc_install(int sig) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = nc_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigfillset(&sa.sa_mask);
	return sigaction(sig, &sa, &nc_old) == 0 ? 0 : errno;
}

static int nc_restore(int sig) { return sigaction(sig, &nc_old, NULL) == 0 ? 0 : errno; }
static int nc_error(void) { return __atomic_load_n(&nc_err, __ATOMIC_SEQ_CST); }
static int nc_sigrtmax(void) { return SIGRTMAX; }
*/
import "C"

import (
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func init() { broadcast = broadcastCgo }

// broadcastMu serialises broadcasts: they share the C side's steps and saved handler.
var broadcastMu sync.Mutex

// broadcastWait bounds how long broadcastCgo waits for every thread to take the steps.
const broadcastWait = 5 * time.Second

// broadcastCgo makes every thread take p's steps where syscall.AllThreadsSyscall cannot
// (the runtime refuses it in a binary with cgo, as it does not know the threads C code may
// start). It borrows a real-time signal whose handler, in C, takes the steps on the thread it
// interrupts, sends it to every thread (tgkill) that does not yet look as p leaves it, and
// reads the threads back until all of them do, twice in a row with the same threads: a
// thread started meanwhile by one that had not yet taken the steps is then found and sent
// the signal too (threads started by one that had inherit the result). Then it gives the
// signal its handler back (the runtime's: a late copy of the signal is then ignored). A
// thread that keeps the signal blocked cannot take part: after broadcastWait DropTo gives up
// with an error naming it.
func broadcastCgo(p *plan) error {
	broadcastMu.Lock()
	defer broadcastMu.Unlock()
	ts, err := Threads(0)
	if err != nil {
		return err
	}
	// A thread blocks every signal for a moment while it starts one (the runtime does around
	// clone): the signal then waits for it. Take the candidate the fewest threads block now.
	sig, fewest := 0, len(ts)+1
	for s := int(C.nc_sigrtmax()); s > int(C.nc_sigrtmax())-8; s-- {
		n := 0
		for _, t := range ts {
			if t.SigBlk&(1<<(s-1)) != 0 {
				n++
			}
		}
		if n < fewest {
			sig, fewest = s, n
		}
	}
	C.nc_reset()
	for _, s := range p.steps {
		var rc C.int
		if s.capset {
			rc = C.nc_add_capset(C.uint(p.hdr.Version), C.uint(p.data[0].Effective), C.uint(p.data[0].Permitted), C.uint(p.data[0].Inheritable),
				C.uint(p.data[1].Effective), C.uint(p.data[1].Permitted), C.uint(p.data[1].Inheritable))
		} else {
			a := s.args
			rc = C.nc_add(C.long(s.nr), C.long(a[0]), C.long(a[1]), C.long(a[2]), C.long(a[3]), C.long(a[4]), C.long(a[5]))
		}
		if rc != 0 {
			return fmt.Errorf("caps: %d steps are too many for the thread signal handler", len(p.steps))
		}
	}
	// The runtime keeps one thread (the one that waits for os/signal's signals) with every
	// signal blocked that no signal.Notify asked for: asking for this one unblocks it there.
	// The channel gets nothing while the C handler is installed.
	notified := make(chan os.Signal, 1)
	signal.Notify(notified, syscall.Signal(sig))
	defer signal.Stop(notified)
	if e := C.nc_install(C.int(sig)); e != 0 {
		return fmt.Errorf("caps: installing the handler of signal %d: %w", sig, syscall.Errno(e))
	}
	defer C.nc_restore(C.int(sig))
	pid := os.Getpid()
	sent := map[int]time.Time{}
	deadline := time.Now().Add(broadcastWait)
	for {
		if e := C.nc_error(); e != 0 {
			return fmt.Errorf("caps: a thread could not drop its capabilities: %w (some threads may have)", syscall.Errno(e))
		}
		ts, err := Threads(0)
		if err != nil {
			return err
		}
		var pending []string
		for _, t := range ts {
			if p.done(t) {
				continue
			}
			pending = append(pending, fmt.Sprint(t.TID))
			// Once per thread; again after a while, in case a thread ID was reused.
			if at, ok := sent[t.TID]; !ok || time.Since(at) > time.Second {
				if err := unix.Tgkill(pid, t.TID, syscall.Signal(sig)); err != nil && err != unix.ESRCH {
					return fmt.Errorf("caps: signalling thread %d: %w", t.TID, err)
				}
				sent[t.TID] = time.Now()
			}
		}
		if len(pending) == 0 {
			again, err := Threads(0)
			if err != nil {
				return err
			}
			if slices.EqualFunc(ts, again, func(a, b Thread) bool { return a.TID == b.TID }) && !slices.ContainsFunc(again, func(t Thread) bool { return !p.done(t) }) {
				return nil
			}
			pending = []string{"(threads came and went)"}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caps: threads %s did not take the capability change within %v (signal %d blocked?; some threads may have)", strings.Join(pending, ", "), broadcastWait, sig)
		}
		time.Sleep(500 * time.Microsecond)
	}
}
