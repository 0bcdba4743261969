package stack

import (
	"errors"
	"os"
	"testing"
	"time"
)

// waitUntilDeadline waits as a socket call does: woken, it looks again, until the deadline
// error comes.
func waitUntilDeadline(d *deadline, notify chan struct{}) error {
	for {
		if err := waitSocket(notify, nil, nil, d); err != nil {
			return err
		}
	}
}

// TestDeadlineTimerWakesWaiter: a waiter blocked with no data is woken by the deadline's own
// timer when it passes, a deadline moved later while it waits holds it longer, and a cleared
// deadline leaves it waiting.
func TestDeadlineTimerWakesWaiter(t *testing.T) {
	var d deadline
	notify := make(chan struct{}, 1)
	start := time.Now()
	d.set(start.Add(30*time.Millisecond), notify)
	done := make(chan error, 1)
	go func() { done <- waitUntilDeadline(&d, notify) }()
	time.Sleep(10 * time.Millisecond)
	d.set(start.Add(80*time.Millisecond), notify) // moved later while the waiter blocks
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want os.ErrDeadlineExceeded", err)
		}
		if el := time.Since(start); el < 80*time.Millisecond {
			t.Fatalf("the waiter returned after %v, before the moved deadline (80ms)", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was not woken by its deadline")
	}

	d.set(time.Now().Add(20*time.Millisecond), notify)
	d.set(time.Time{}, notify) // cleared: the armed timer must not end the wait
	go func() { done <- waitUntilDeadline(&d, notify) }()
	select {
	case err := <-done:
		t.Fatalf("a waiter without a deadline returned %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	d.set(time.Now().Add(-time.Second), notify) // in the past: at once
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline set in the past did not end the wait")
	}
}

// TestDeadlineWaitAllocs: a blocking call with a deadline set costs no timer (and no
// allocation) of its own.
func TestDeadlineWaitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; the test script runs this without -race")
	}
	var d deadline
	notify := make(chan struct{}, 1)
	d.set(time.Now().Add(time.Hour), notify)
	<-notify // set's own wake-up
	allocs := testing.AllocsPerRun(1000, func() {
		notify <- struct{}{}
		if err := waitSocket(notify, nil, nil, &d); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per wait with a deadline, want 0", allocs)
	}
}
