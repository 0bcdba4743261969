//go:build linux

package caps

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dropChildEnv makes the test binary a child that drops its capabilities (DropTo cannot be
// undone: the test process itself must keep them).
const dropChildEnv = "NETCHAN_CAPS_DROP_CHILD"

// needsChildEnv makes the test binary a child that prints NeedsFor's answers as JSON.
const needsChildEnv = "NETCHAN_CAPS_NEEDS_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(dropChildEnv) != "" {
		os.Exit(dropChild())
	}
	if os.Getenv(needsChildEnv) != "" {
		json.NewEncoder(os.Stdout).Encode(NeedsFor("", ReservedPorts, Neighbors, Traffic))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childReport is what the child prints: every thread after the drop, and after more threads
// started.
type childReport struct {
	Kept    Set      `json:"kept"`
	Threads []Thread `json:"threads"`
	Later   []Thread `json:"later"`
	Err     string   `json:"err"`
	Cgo     bool     `json:"cgo"`
}

// dropChild starts threads of every kind a program has (locked to goroutines, blocked in
// system calls, busy, and the runtime's os/signal thread, which blocks every signal not asked
// for), probes once, drops to CAP_NET_ADMIN, starts more threads, and reports every thread's
// capabilities as JSON.
func dropChild() int {
	var rep childReport
	rep.Cgo = broadcast != nil
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	if err := Probe(0, func() error { return nil }); err != nil {
		panic(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	up := make(chan struct{})
	for i := 0; i < 6; i++ {
		wg.Add(3)
		go func() { // locked, sleeping in the kernel
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			up <- struct{}{}
			var b [1]byte
			unix.Read(int(r.Fd()), b[:]) // until the pipe closes
		}()
		go func() { // locked, busy
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			up <- struct{}{}
			for {
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
		go func() { // unlocked, in and out of the kernel
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
	}
	for i := 0; i < 12; i++ {
		<-up
	}
	rep.Kept, err = DropTo(Cap{NetAdmin, "CAP_NET_ADMIN"})
	if err != nil {
		rep.Err = err.Error()
	}
	rep.Threads, _ = Threads(0)
	// Threads started after the drop inherit it.
	started := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			started <- struct{}{}
			<-stop
		}()
	}
	for i := 0; i < 4; i++ {
		<-started
	}
	rep.Later, _ = Threads(0)
	close(stop)
	w.Close()
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("root test: runs in the lab phase of ./test.sh (without -short)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("caps: this test drops a root process's capabilities: run it as root")
	}
}

// runDropChild runs binary as the dropping child and checks its report.
func runDropChild(t *testing.T, binary string, wantCgo bool) {
	t.Helper()
	cmd := exec.Command(binary, "-test.run=^$")
	cmd.Env = append(os.Environ(), dropChildEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child's report: %v\n%s", err, out)
	}
	if rep.Err != "" {
		t.Fatalf("DropTo: %s", rep.Err)
	}
	if rep.Cgo != wantCgo {
		t.Fatalf("child built with cgo %v, want %v", rep.Cgo, wantCgo)
	}
	want := Set(1 << NetAdmin)
	if rep.Kept != want {
		t.Errorf("kept %s, want %s", rep.Kept, want)
	}
	for what, ts := range map[string][]Thread{"after the drop": rep.Threads, "with threads started after it": rep.Later} {
		if len(ts) < 10 {
			t.Errorf("%s: only %d threads: the child did not start the threads it should", what, len(ts))
		}
		for _, th := range ts {
			if th.Effective != want || th.Permitted != want || th.Inheritable != 0 || th.Ambient != 0 || th.Bounding != want || !th.NoNewPrivs {
				t.Errorf("%s: thread %d: effective %s, permitted %s, inheritable %s, ambient %s, bounding %s, no_new_privs %v; want %s, bounding %s, no_new_privs",
					what, th.TID, th.Effective, th.Permitted, th.Inheritable, th.Ambient, th.Bounding, th.NoNewPrivs, want, want)
			}
		}
	}
	t.Logf("cgo %v: %d threads after the drop, %d with later ones, each with %s only", rep.Cgo, len(rep.Threads), len(rep.Later), want)
}

// TestDropToAllThreads drops a process with many threads to CAP_NET_ADMIN and finds every
// thread, and every thread started later, with exactly that: this test binary's own build
// (cgo when go test links it: the signal handler in C; else AllThreadsSyscall).
func TestDropToAllThreads(t *testing.T) {
	requireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	runDropChild(t, self, broadcast != nil)
}

// TestDropToBothBuilds builds this package's tests with and without cgo and runs the dropping
// child of each: the two ways of reaching every thread.
func TestDropToBothBuilds(t *testing.T) {
	requireRoot(t)
	for _, cgo := range []bool{true, false} {
		t.Run(fmt.Sprintf("cgo=%v", cgo), func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "caps.test")
			build := exec.Command("go", "test", "-c", "-o", bin, ".")
			build.Env = append(os.Environ(), "CGO_ENABLED="+map[bool]string{true: "1", false: "0"}[cgo])
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go test -c: %v\n%s", err, out)
			}
			runDropChild(t, bin, cgo)
		})
	}
}

func TestParseStatus(t *testing.T) {
	th, err := ParseStatus("Name:\tx\nSigBlk:\t0000000000000004\nCapInh:\t0000000000000000\nCapPrm:\t0000000000001000\nCapEff:\t0000000000001000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n")
	if err != nil {
		t.Fatal(err)
	}
	if th.Effective != 1<<NetAdmin || th.Permitted != 1<<NetAdmin || th.Bounding != 0x1ffffffffff || !th.NoNewPrivs || th.SigBlk != 4 {
		t.Fatalf("ParseStatus: %+v", th)
	}
	if _, err := ParseStatus("Name: x\n"); err == nil {
		t.Fatal("no capability lines: want an error")
	}
	if s := Set(1<<NetAdmin | 1<<BPF).String(); s != "CAP_NET_ADMIN,CAP_BPF" {
		t.Errorf("String = %q", s)
	}
	if !strings.Contains(Set(0).String(), "none") {
		t.Errorf("empty set: %q", Set(0))
	}
}

func TestSetText(t *testing.T) {
	for _, s := range []Set{0, 1 << NetAdmin, 1<<DACReadSearch | 1<<BPF | 1<<50} {
		b, _ := s.MarshalText()
		var back Set
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("%x → %q → %x, %v", uint64(s), b, uint64(back), err)
		}
	}
	var bad Set
	if err := bad.UnmarshalText([]byte("CAP_NOPE")); err == nil {
		t.Error("CAP_NOPE: no error")
	}
}

// TestProbe lowers one thread's effective set and finds the others, and that thread
// afterwards, as they were.
func TestProbe(t *testing.T) {
	requireRoot(t)
	before, err := Threads(0)
	if err != nil {
		t.Fatal(err)
	}
	var inside Set
	err = Probe(1<<NetAdmin, func() error {
		b, err := os.ReadFile("/proc/thread-self/status")
		if err != nil {
			return err
		}
		th, err := ParseStatus(string(b))
		inside = th.Effective
		return err
	})
	if err != nil || inside != 1<<NetAdmin {
		t.Fatalf("inside Probe: effective %s, %v; want CAP_NET_ADMIN", inside, err)
	}
	after, err := Threads(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range after {
		if th.Effective != before[0].Effective || th.Permitted != before[0].Permitted {
			t.Errorf("after Probe: thread %d holds %s (permitted %s), want %s", th.TID, th.Effective, th.Permitted, before[0].Effective)
		}
	}
}

// TestNeedsFor checks the answers that depend on the user and the files: root may write the
// reserved ports without a capability, another user needs CAP_NET_ADMIN (a child run as
// nobody, with and without it ambient: the probe asks what it would need without it); a
// configuration file in another user's private directory needs CAP_DAC_READ_SEARCH; neighbour
// resolution always CAP_NET_ADMIN; traffic, the stop and busy polling (its socket options set
// at set-up) nothing; and the map answer agrees with the kernel version.
func TestNeedsFor(t *testing.T) {
	requireRoot(t)
	needs := func(ns []Need, f string) Set {
		t.Helper()
		i := slices.IndexFunc(ns, func(n Need) bool { return n.Feature == f })
		if i < 0 {
			t.Fatalf("no %s in %+v", f, ns)
		}
		return ns[i].Needs
	}
	dir := filepath.Join(t.TempDir(), "private")
	os.Mkdir(dir, 0o700)
	path := filepath.Join(dir, "c.json")
	os.WriteFile(path, []byte("{}"), 0o600)
	os.Chown(dir, 65534, 65534)
	os.Chown(path, 65534, 65534)
	root := NeedsFor(path, ReservedPorts, Config, Neighbors, Maps, Traffic, Stop, BusyPoll)
	if s := needs(root, ReservedPorts); s != 0 {
		t.Errorf("root: reserved ports need %s, want none", s)
	}
	if s := needs(root, Config); s != 1<<DACReadSearch {
		t.Errorf("root, a file in nobody's private directory: config reload needs %s, want CAP_DAC_READ_SEARCH", s)
	}
	if s := needs(NeedsFor(os.Args[0], Config), Config); s != 0 {
		t.Errorf("root, its own file: config reload needs %s, want none", s)
	}
	if s := needs(root, Neighbors); s != 1<<NetAdmin {
		t.Errorf("neighbour resolution needs %s, want CAP_NET_ADMIN", s)
	}
	if s := needs(root, Traffic) | needs(root, Stop) | needs(root, BusyPoll); s != 0 {
		t.Errorf("traffic, stop and busy polling need %s, want none", s)
	}
	maj, min, ok := release()
	if s := needs(root, Maps); ok && (maj > 5 || maj == 5 && min >= 19) && s != 0 {
		t.Errorf("Linux %d.%d: bpf maps need %s, want none (since 5.19)", maj, min, s)
	}
	if keep := Keep(root); !slices.Equal(keep, (Set(1<<DACReadSearch|1<<NetAdmin) | needs(root, Maps)).Caps()) {
		t.Errorf("Keep: %v", keep)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, ambient := range []string{"-all", "+net_admin"} {
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps="+ambient, "--ambient-caps="+ambient, self, "-test.run=^$")
		cmd.Env = append(os.Environ(), needsChildEnv+"=1")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child as nobody (ambient %s): %v %s", ambient, err, stderrOf(err))
		}
		var ns []Need
		if err := json.Unmarshal(out, &ns); err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if s := needs(ns, ReservedPorts); s != 1<<NetAdmin {
			t.Errorf("nobody (ambient %s): reserved ports need %s, want CAP_NET_ADMIN", ambient, s)
		}
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
