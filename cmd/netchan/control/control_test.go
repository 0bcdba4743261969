package control

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func listen(t *testing.T, dir, name string) *Server {
	t.Helper()
	s, err := Listen(Config{Dir: dir, Name: name, Command: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStatusSections(t *testing.T) {
	dir := t.TempDir()
	s := listen(t, dir, "a")
	var n atomic.Uint64
	s.AddSection("shards", func() any { return []map[string]uint64{{"rx_packets": n.Load()}} })
	s.AddSection("pipeline", func() any { return map[string]string{"name": "reflect"} })
	n.Store(42)
	ctx := context.Background()
	st, err := Fetch(ctx, dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	if st.Instance != "a" || st.PID != os.Getpid() || st.Command != "test" || st.Uptime < 0 {
		t.Errorf("header %+v", st.Header)
	}
	if strings.Join(st.Header.Sections, ",") != "shards,pipeline" {
		t.Errorf("sections %v, want registration order", st.Header.Sections)
	}
	var sh []map[string]uint64
	if ok, err := st.Section("shards", &sh); !ok || err != nil || sh[0]["rx_packets"] != 42 {
		t.Errorf("shards section: %v %v %v", ok, err, sh)
	}
	// The whole document is valid JSON with the sections at the top level.
	var doc map[string]any
	if err := json.Unmarshal(st.Raw, &doc); err != nil || doc["pipeline"] == nil || doc["instance"] != "a" {
		t.Errorf("document %s: %v", st.Raw, err)
	}
	raw, err := FetchSection(ctx, dir, "a", "pipeline")
	if err != nil || strings.TrimSpace(string(raw)) != `{"name":"reflect"}` {
		t.Errorf("one section: %s %v", raw, err)
	}
	if _, err := FetchSection(ctx, dir, "a", "nat"); err == nil || !strings.Contains(err.Error(), `no section "nat"`) {
		t.Errorf("missing section: %v", err)
	}
	// A section added later (as later issues do) shows up; replacing keeps the order.
	s.AddSection("stack", func() any { return 1 })
	s.AddSection("shards", func() any { return 2 })
	st, _ = Fetch(ctx, dir, "a")
	if strings.Join(st.Header.Sections, ",") != "shards,pipeline,stack" || string(st.Sections["shards"]) != "2" {
		t.Errorf("after adding: %v %s", st.Header.Sections, st.Sections["shards"])
	}
}

func TestBrokenSection(t *testing.T) {
	dir := t.TempDir()
	s := listen(t, dir, "b")
	s.AddSection("bad", func() any { panic("boom") })
	s.AddSection("chan", func() any { return make(chan int) })
	s.AddSection("good", func() any { return 7 })
	st, err := Fetch(context.Background(), dir, "b")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st.Sections["bad"]), "boom") || !strings.Contains(string(st.Sections["chan"]), "error") || string(st.Sections["good"]) != "7" {
		t.Errorf("sections %s", st.Raw)
	}
}

func TestReservedSection(t *testing.T) {
	s := listen(t, t.TempDir(), "c")
	for _, name := range []string{"pid", "instance", "sections", "", "a/b"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AddSection(%q) did not panic", name)
				}
			}()
			s.AddSection(name, func() any { return nil })
		}()
	}
}

// TestOneInstancePerName: a second server under a live name is refused with a message that
// says how to pick another; after Close the name is free and nothing is left behind.
func TestOneInstancePerName(t *testing.T) {
	dir := t.TempDir()
	s := listen(t, dir, "x")
	_, err := Listen(Config{Dir: dir, Name: "x"})
	if !errors.Is(err, ErrInstanceRunning) || !strings.Contains(err.Error(), "--instance") || !strings.Contains(err.Error(), "process ") {
		t.Fatalf("second Listen: %v", err)
	}
	// The live instance still answers.
	if _, err := Fetch(context.Background(), dir, "x"); err != nil {
		t.Fatalf("first instance after the refused second: %v", err)
	}
	other := listen(t, dir, "y")
	names, err := Running(dir)
	if err != nil || strings.Join(names, ",") != "x,y" {
		t.Errorf("Running = %v, %v", names, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	other.Close()
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
	_, err = Fetch(context.Background(), dir, "x")
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("Fetch after Close: %v", err)
	}
	s2 := listen(t, dir, "x")
	if _, err := Fetch(context.Background(), dir, "x"); err != nil {
		t.Errorf("reused name: %v", err)
	}
	s2.Close()
}

// TestStaleSocket: a socket file left by a dead process (nobody holds the lock) is reported
// as such and removed by the next instance of that name.
func TestStaleSocket(t *testing.T) {
	dir := t.TempDir()
	sock := SocketPath(dir, "old")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody listens: what SIGKILL leaves
	os.WriteFile(filepath.Join(dir, "old.lock"), []byte("999999\n"), 0o644)
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
	_, err = Fetch(context.Background(), dir, "old")
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "died") {
		t.Errorf("Fetch of a stale socket: %v", err)
	}
	if names, _ := Running(dir); len(names) != 0 {
		t.Errorf("Running lists %v", names)
	}
	s := listen(t, dir, "old")
	s.AddSection("x", func() any { return 1 })
	if _, err := Fetch(context.Background(), dir, "old"); err != nil {
		t.Errorf("new instance over a stale socket: %v", err)
	}
}

func TestNotRunningListsOthers(t *testing.T) {
	dir := t.TempDir()
	listen(t, dir, "edge")
	_, err := Fetch(context.Background(), dir, "default")
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "running: edge") {
		t.Errorf("%v", err)
	}
}

// TestConcurrentReads reads the status from many goroutines while the section's source
// changes (run with -race).
func TestConcurrentReads(t *testing.T) {
	dir := t.TempDir()
	s := listen(t, dir, "r")
	var n atomic.Uint64
	s.AddSection("n", func() any { return n.Load() })
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				n.Add(1)
			}
		}
	}()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for range 20 {
				st, err := Fetch(context.Background(), dir, "r")
				if err != nil {
					t.Error(err)
					return
				}
				var v uint64
				st.Section("n", &v)
				if v < last {
					t.Errorf("counter went back: %d after %d", v, last)
				}
				last = v
			}
		}()
	}
	wg.Wait()
	close(stop)
}

func TestCloseWhileReading(t *testing.T) {
	dir := t.TempDir()
	s, err := Listen(Config{Dir: dir, Name: "z"})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	var once sync.Once
	s.AddSection("slow", func() any { once.Do(func() { close(entered) }); time.Sleep(50 * time.Millisecond); return 1 })
	done := make(chan error, 1)
	go func() { _, err := Fetch(context.Background(), dir, "z"); done <- err }()
	<-entered
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("a request in flight during Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	live := listen(t, dir, "tlive")
	for _, name := range []string{"tdead", "other"} {
		ln, err := net.Listen("unix", SocketPath(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		os.WriteFile(filepath.Join(dir, name+".lock"), []byte("1\n"), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "tlockonly.lock"), nil, 0o644)
	if err := RemoveStale(dir, "t"); err != nil {
		t.Fatal(err)
	}
	var left []string
	m, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range m {
		left = append(left, filepath.Base(p))
	}
	if strings.Join(left, ",") != "other.lock,other.sock,tlive.lock,tlive.sock" {
		t.Errorf("left %v: want the live instance and the other prefix untouched", left)
	}
	if _, err := Fetch(context.Background(), dir, "tlive"); err != nil {
		t.Errorf("live instance after RemoveStale: %v", err)
	}
	live.Close()
}
