//go:build linux

package cpu

import (
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadMask returns the calling thread's affinity mask as a list.
func threadMask(t *testing.T) []int {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	return maskList(&set)
}

func mustAllowed(t *testing.T) []int {
	t.Helper()
	allowed, err := Allowed()
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) == 0 {
		t.Fatal("Allowed() is empty")
	}
	return allowed
}

// work burns a little CPU and gives the scheduler chances to move the thread.
func work(n int) uint64 {
	var x uint64 = 1
	for i := range n {
		x = x*6364136223846793005 + uint64(i)
		if i%4096 == 0 {
			runtime.Gosched()
		}
	}
	return x
}

var sink uint64

func TestDetect(t *testing.T) {
	top, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", top)
	if len(top.CPUs) == 0 {
		t.Fatal("Detect returned no CPUs")
	}
	if !slices.IsSortedFunc(top.CPUs, func(a, b CPU) int { return a.ID - b.ID }) {
		t.Errorf("CPUs not sorted by ID: %v", top.CPUs)
	}
	allowed := mustAllowed(t)
	for i, c := range top.CPUs {
		if i > 0 && c.ID == top.CPUs[i-1].ID {
			t.Errorf("CPU %d listed twice", c.ID)
		}
		if !slices.Contains(allowed, c.ID) {
			t.Errorf("CPU %d is not in the affinity mask %v", c.ID, allowed)
		}
		if c.Node < 0 {
			t.Errorf("CPU %d has node %d", c.ID, c.Node)
		}
	}
	if n := top.Cores(); n < 1 || n > len(top.CPUs) {
		t.Errorf("Cores() = %d with %d CPUs", n, len(top.CPUs))
	}
	if top.PhysicalCores < 1 || top.LogicalCores < 1 || top.ThreadsPerCore < 1 {
		t.Errorf("counts: %d physical, %d logical, %d per core", top.PhysicalCores, top.LogicalCores, top.ThreadsPerCore)
	}
	online, err := readCPUList(sysCPU + "/online")
	if err != nil {
		t.Skipf("no sysfs online list (%v); skipping the NumCPU comparison", err)
	}
	// runtime.NumCPU is the size of the affinity mask at start-up; with a full mask it is every
	// online CPU, and so is Detect's list.
	if slices.Equal(online, allowed) {
		if len(top.CPUs) != runtime.NumCPU() {
			t.Errorf("Detect found %d CPUs, runtime.NumCPU() = %d", len(top.CPUs), runtime.NumCPU())
		}
		for i, c := range top.CPUs {
			if c.ID != online[i] {
				t.Errorf("CPUs[%d].ID = %d, want %d", i, c.ID, online[i])
			}
		}
	} else {
		t.Logf("affinity mask %v is not every online CPU %v; NumCPU comparison skipped", allowed, online)
	}
}

func TestPinEachAllowed(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	for _, cpu := range mustAllowed(t) {
		unpin, err := Pin(cpu)
		if err != nil {
			t.Fatalf("Pin(%d): %v", cpu, err)
		}
		if got := threadMask(t); !slices.Equal(got, []int{cpu}) {
			t.Errorf("after Pin(%d) the thread mask is %v", cpu, got)
		}
		for i := range rounds {
			sink += work(50_000)
			if i%2 == 1 {
				time.Sleep(time.Millisecond) // park and wake on the same locked thread
			}
			if got := Current(); got != cpu {
				t.Errorf("Pin(%d), round %d: Current() = %d", cpu, i, got)
			}
		}
		unpin()
	}
}

func TestUnpinRestoresMask(t *testing.T) {
	// Hold our own lock so the test stays on the thread whose mask it checks.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadMask(t)
	allowed := mustAllowed(t)
	cpu := allowed[len(allowed)-1]

	unpin, err := Pin(cpu)
	if err != nil {
		t.Fatal(err)
	}
	if got := threadMask(t); !slices.Equal(got, []int{cpu}) {
		t.Fatalf("pinned mask = %v, want [%d]", got, cpu)
	}
	// Pins nest, and Allowed still reports the process's mask from a pinned goroutine.
	inner, err := Pin(allowed[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := mustAllowed(t); !slices.Equal(got, allowed) {
		t.Errorf("Allowed() from a pinned goroutine = %v, want %v", got, allowed)
	}
	inner()
	if got := threadMask(t); !slices.Equal(got, []int{cpu}) {
		t.Errorf("after the inner unpin the mask is %v, want [%d]", got, cpu)
	}
	unpin()
	unpin() // a second call does nothing
	if got := threadMask(t); !slices.Equal(got, before) {
		t.Errorf("after unpin the mask is %v, want %v", got, before)
	}
}

func TestPinNotAllowed(t *testing.T) {
	allowed := mustAllowed(t)
	bad := []int{4096, maxCPUs, -1}
	// Online CPUs outside the mask (run the test under taskset -c to exercise this).
	if online, err := readCPUList(sysCPU + "/online"); err == nil {
		for _, c := range online {
			if !slices.Contains(allowed, c) {
				bad = append(bad, c)
			}
		}
	}
	for _, cpu := range bad {
		unpin, err := Pin(cpu)
		if err == nil {
			unpin()
			t.Fatalf("Pin(%d) succeeded", cpu)
		}
		if !errors.Is(err, ErrNotAllowed) {
			t.Errorf("Pin(%d) error %v does not match ErrNotAllowed", cpu, err)
		}
		var nae *NotAllowedError
		if !errors.As(err, &nae) || nae.CPU != cpu || !slices.Equal(nae.Allowed, allowed) {
			t.Errorf("Pin(%d) error = %#v", cpu, err)
		}
		if !strings.Contains(err.Error(), "["+FormatList(allowed)+"]") {
			t.Errorf("error %q does not list the allowed CPUs %v", err, allowed)
		}
	}
	// A failed Pin must leave the thread unlocked and its mask alone.
	if got := threadMask(t); !slices.Equal(got, allowed) {
		t.Errorf("after failed Pin the thread mask is %v", got)
	}
}

func TestUnpinFromOtherGoroutinePanics(t *testing.T) {
	cpu := mustAllowed(t)[0]
	unpins := make(chan func())
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		unpin, err := Pin(cpu)
		if err != nil {
			t.Error(err)
			close(unpins)
			return
		}
		unpins <- unpin
		<-release
		unpin()
	}()
	unpin, ok := <-unpins
	if !ok {
		return
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("unpin from another goroutine did not panic")
			}
		}()
		unpin() // this goroutine cannot be on the pinned thread

	}()
	close(release)
	<-done
}

func TestPinConcurrentLeavesNoPinnedThreads(t *testing.T) {
	allowed := mustAllowed(t)
	n := 16
	if testing.Short() {
		n = 8
	}
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			for i := range 10 {
				cpu := allowed[(g+i)%len(allowed)]
				unpin, err := Pin(cpu)
				if err != nil {
					t.Error(err)
					return
				}
				if work(10_000) == 0 {
					t.Log("unlikely")
				}
				if got := Current(); got != cpu {
					t.Errorf("goroutine %d: Current() = %d, want %d", g, got, cpu)
				}
				if g%4 == 0 && i == 9 {
					return // exit while pinned: the runtime must drop this thread
				}
				unpin()
			}
		})
	}
	wg.Wait()
	// Every thread left in the pool must carry the full mask: check from many goroutines.
	var check sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		check.Go(func() {
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err != nil {
				t.Error(err)
				return
			}
			if got := maskList(&set); !slices.Equal(got, allowed) {
				t.Errorf("an unpinned goroutine runs with mask %v, want %v", got, allowed)
			}
			runtime.Gosched()
		})
	}
	check.Wait()
}

func TestCurrent(t *testing.T) {
	c := Current()
	if c < 0 || c >= maxCPUs {
		t.Fatalf("Current() = %d", c)
	}
}
