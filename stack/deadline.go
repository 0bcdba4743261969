package stack

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/pipelines"
)

// deadline is one direction's deadline of a socket (read, write, or a listener's accept). Like
// the Go netpoller's per-fd timers, it keeps one timer that SetDeadline arms and that wakes the
// waiter through the socket's notify channel when the deadline passes; a blocking call then
// costs no timer of its own. (A timer per wait, made and stopped around each blocking call,
// took a few per cent of the CPU profile of bench/tcppeer's request/response test, whose
// connections carry a deadline.)
//
// The deadline is kept on the monotonic clock (pipelines.Now), the clock the timer runs on, so a
// waiter woken by the timer always sees it passed, whatever the wall clock does.
type deadline struct {
	at    atomic.Int64 // pipelines.Now() value at which the deadline passes; 0: none
	mu    sync.Mutex   // serialises set
	timer *time.Timer  // made on the first future deadline, then reset
}

// set moves the deadline to t (zero: none) and wakes a waiter on notify so it sees the change.
func (d *deadline) set(t time.Time, notify chan struct{}) {
	d.mu.Lock()
	switch {
	case t.IsZero():
		d.at.Store(0)
		if d.timer != nil {
			d.timer.Stop()
		}
	default:
		left := time.Until(t)
		at := pipelines.Now() + int64(left)
		if at <= 0 {
			at = 1 // passed (and non-zero, which would mean "none")
		}
		d.at.Store(at)
		switch {
		case left <= 0:
			if d.timer != nil {
				d.timer.Stop()
			}
		case d.timer == nil:
			d.timer = time.AfterFunc(left, func() { notifyOne(notify) })
		default:
			d.timer.Reset(left)
		}
	}
	d.mu.Unlock()
	notifyOne(notify)
}

// stop disarms the timer when its socket closes, so an armed deadline does not keep the timer
// (and the socket's channel) in the runtime's heap until it fires.
func (d *deadline) stop() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
}

// check returns os.ErrDeadlineExceeded once the deadline has passed.
func (d *deadline) check() error {
	if at := d.at.Load(); at != 0 && pipelines.Now() >= at {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// notifyOne wakes one waiter on a notify channel (capacity 1), or leaves a wake-up for the next.
func notifyOne(notify chan struct{}) {
	select {
	case notify <- struct{}{}:
	default:
	}
}

// waitSocket blocks a socket user until notify fires (nil: more data or room may be there, or
// the deadline moved; the caller looks again), closed is closed (net.ErrClosed), done is closed
// (nil), or the deadline has passed (os.ErrDeadlineExceeded). A nil done never fires. UDP and
// TCP sockets and the TCP listener share it.
func waitSocket(notify, closed, done <-chan struct{}, d *deadline) error {
	if err := d.check(); err != nil {
		return err
	}
	select {
	case <-notify:
		return nil
	case <-closed:
		return errClosed
	case <-done:
		return nil
	}
}
