// Package control is a running netchan instance's window: a unix socket DIR/NAME.sock
// (/run/netchan/NAME.sock by default) that serves the instance's status as JSON over HTTP, and
// the client `netchan status` uses to read it.
//
// # Sections
//
// A status is a few fixed fields (instance, pid, command, started, uptime_seconds, sections)
// and named sections, each filled by a function the command registered with AddSection when the
// request arrives: `run` adds "pipeline", "shards" (Engine.Snapshot, which reads the shards'
// single-writer atomics and takes no lock a shard holds) and "xdp"; later commands add their own
// ("stack", "tcp", "nat"). Section functions run on the HTTP server's goroutines, concurrently
// with the shards: they must be safe for that and quick.
//
//	GET /status           {"instance": ..., "pid": ..., "sections": ["pipeline", "shards"], "pipeline": {...}, "shards": [...]}
//	GET /status/SECTION   that section alone
//
// # Streams
//
// Besides request/response, a command may register a stream with AddStream (capture and
// trace do): a request that the instance answers with a long response body, written and
// flushed as it goes, until the stream is done, the client goes away, the client asks it to
// stop, or the server closes:
//
//	GET  /stream/NAME?ARGS   200 with header Netchan-Stream: ID, then the stream's bytes until it ends;
//	                         an error before the first byte is a 4xx/5xx with the message
//	POST /stop/ID            ask stream ID to end; it then writes what it writes last (final
//	                         figures) and ends its body, which the client reads to its end
//
// # Actions
//
// A command may register an action with AddAction (reload does): a request with a JSON body
// that changes the running instance and answers with a JSON result (Call is the client):
//
//	POST /action/NAME        body: the request as JSON; 200 with the result as JSON, or 4xx/5xx with the message
//
// A stream's function gets a context that ends in all three cases; the server's Close ends
// every stream before it shuts down, so a stream never holds the instance's exit.
//
// # One instance per name
//
// Listen takes an exclusive open-file-description lock (fcntl F_OFD_SETLK) on DIR/NAME.lock before it touches the socket and holds it
// for the life of the server. A second instance under the same name fails to take the lock and
// gets ErrInstanceRunning, with the holder's pid and how to choose another name. Whoever takes
// the lock knows that no live process serves NAME.sock, so a socket file found there was left
// by a process that died (SIGKILL, a crash): Listen removes it. The kernel drops the lock when
// its holder dies, however it dies, so there is no stale lock to clean. Close removes the
// socket and the lock file.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir holds the sockets of running instances.
const DefaultDir = "/run/netchan"

var (
	// ErrInstanceRunning: another live process holds the instance name.
	ErrInstanceRunning = errors.New("an instance of this name is already running")
	// ErrNotRunning: no live instance serves the name.
	ErrNotRunning = errors.New("no netchan instance is running under the name")
)

// reserved are the fixed fields of a status; no section may take these names.
var reserved = map[string]bool{"instance": true, "pid": true, "command": true, "started": true, "uptime_seconds": true, "sections": true}

// Config describes a server.
type Config struct {
	Dir     string // default DefaultDir
	Name    string // the instance name; the caller validates it
	Command string // the command that runs the instance (run, demo, ...)
}

// Server serves one instance's status.
type Server struct {
	cfg     Config
	sock    string
	lock    *os.File
	ln      net.Listener
	srv     *http.Server
	started time.Time
	done    chan struct{}

	mu       sync.RWMutex
	order    []string
	sections map[string]func() any
	streams  map[string]StreamFunc
	actions  map[string]ActionFunc
	running  map[string]context.CancelFunc // by stream id
	nextID   uint64
	closing  context.Context // ends when Close begins: every stream's context derives from it
	shutdown context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// SocketPath is the socket of instance name under dir ("" means DefaultDir).
func SocketPath(dir, name string) string {
	if dir == "" {
		dir = DefaultDir
	}
	return filepath.Join(dir, name+".sock")
}

func lockPath(dir, name string) string { return filepath.Join(dir, name+".lock") }

// Listen claims the name, removes a stale socket, and starts serving.
func Listen(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if cfg.Name == "" {
		return nil, errors.New("control: no instance name")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("control: creating %s for the control socket: %w (run as root, or check that /run is writable)", cfg.Dir, err)
	}
	lock, err := takeLock(cfg.Dir, cfg.Name)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, sock: SocketPath(cfg.Dir, cfg.Name), lock: lock, started: time.Now(),
		done: make(chan struct{}), sections: map[string]func() any{}, streams: map[string]StreamFunc{}, running: map[string]context.CancelFunc{}}
	s.closing, s.shutdown = context.WithCancel(context.Background())
	// We hold the lock: nobody live serves this socket, so a file there is stale.
	if err := os.Remove(s.sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.unlock()
		return nil, fmt.Errorf("control: removing the stale socket %s: %w", s.sock, err)
	}
	ln, err := net.Listen("unix", s.sock)
	if err != nil {
		s.unlock()
		return nil, fmt.Errorf("control: listening on %s: %w", s.sock, err)
	}
	os.Chmod(s.sock, 0o660)
	s.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", s.handleStatus)
	mux.HandleFunc("GET /status/{section}", s.handleSection)
	mux.HandleFunc("GET /stream/{name}", s.handleStream)
	mux.HandleFunc("POST /stop/{id}", s.handleStop)
	mux.HandleFunc("POST /action/{name}", s.handleAction)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		s.srv.Serve(ln)
		close(s.done)
	}()
	return s, nil
}

// takeLock takes DIR/NAME.lock exclusively, or says who holds it.
func takeLock(dir, name string) (*os.File, error) {
	path := lockPath(dir, name)
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("control: opening %s: %w", path, err)
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			pid := readPid(f)
			f.Close()
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
				who := "another process"
				if pid > 0 {
					who = "process " + strconv.Itoa(pid)
				}
				return nil, fmt.Errorf("instance %q: %w (%s, socket %s): stop it, or give this one another name with --instance NAME (netchan status --instance %s shows the running one)",
					name, ErrInstanceRunning, who, SocketPath(dir, name), name)
			}
			return nil, fmt.Errorf("control: locking %s: %w", path, err)
		}
		// The previous holder may have removed the file between our open and our lock: then we
		// locked an orphan inode and must try again on the file now at path.
		var a, b syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &a) == nil && syscall.Stat(path, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			f.Truncate(0)
			f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("control: could not take %s: it keeps being replaced", path)
}

func readPid(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	return pid
}

func (s *Server) unlock() {
	os.Remove(lockPath(s.cfg.Dir, s.cfg.Name)) // while still held, so nobody locks the old inode in between
	s.lock.Close()
}

// Socket is the path the server listens on.
func (s *Server) Socket() string { return s.sock }

// AddSection registers (or replaces) a named section; fn is called for every status request,
// on a server goroutine, and its result is encoded as JSON. It panics on a reserved name
// (instance, pid, command, started, uptime_seconds, sections) or a name with '/'.
func (s *Server) AddSection(name string, fn func() any) {
	if reserved[name] || name == "" || strings.Contains(name, "/") {
		panic(fmt.Sprintf("control: section name %q is reserved or invalid", name))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sections[name]; !ok {
		s.order = append(s.order, name)
	}
	s.sections[name] = fn
}

// Close stops serving and removes the socket and the lock file.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.shutdown() // streams end first, so Shutdown does not wait for them
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		<-s.done
		if rerr := os.Remove(s.sock); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		s.unlock()
		s.closeErr = err
	})
	return s.closeErr
}

// Header is a status's fixed part.
type Header struct {
	Instance string    `json:"instance"`
	PID      int       `json:"pid"`
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Uptime   float64   `json:"uptime_seconds"`
	Sections []string  `json:"sections"`
}

// section calls one section function, turning a panic into an error value so that a broken
// section cannot take the others down.
func section(fn func() any) (v any) {
	defer func() {
		if r := recover(); r != nil {
			v = map[string]string{"error": fmt.Sprint(r)}
		}
	}()
	return fn()
}

func (s *Server) status() ([]byte, error) {
	s.mu.RLock()
	order := append([]string(nil), s.order...)
	fns := make([]func() any, len(order))
	for i, n := range order {
		fns[i] = s.sections[n]
	}
	s.mu.RUnlock()
	h := Header{Instance: s.cfg.Name, PID: os.Getpid(), Command: s.cfg.Command, Started: s.started,
		Uptime: time.Since(s.started).Seconds(), Sections: order}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(hb[:len(hb)-1]) // the header object without its closing brace
	for i, n := range order {
		b, err := json.Marshal(section(fns[i]))
		if err != nil {
			b, _ = json.Marshal(map[string]string{"error": err.Error()})
		}
		fmt.Fprintf(&buf, ",%q:", n)
		buf.Write(b)
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	b, err := s.status()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (s *Server) handleSection(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("section")
	s.mu.RLock()
	fn, ok := s.sections[name]
	s.mu.RUnlock()
	if !ok {
		http.Error(w, fmt.Sprintf("no section %q", name), http.StatusNotFound)
		return
	}
	b, err := json.Marshal(section(fn))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

// Status is what a client read: the header, and each section's raw JSON.
type Status struct {
	Header
	Raw      []byte                     // the whole document as served
	Sections map[string]json.RawMessage // by name
}

// Section decodes one section into v; it reports whether the section was there.
func (st *Status) Section(name string, v any) (bool, error) {
	raw, ok := st.Sections[name]
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

// Fetch reads instance name's status from its socket under dir ("" means DefaultDir).
func Fetch(ctx context.Context, dir, name string) (*Status, error) {
	raw, err := get(ctx, dir, name, "/status")
	if err != nil {
		return nil, err
	}
	st := &Status{Raw: raw}
	if err := json.Unmarshal(raw, &st.Header); err != nil {
		return nil, fmt.Errorf("control: instance %q sent a status that is not JSON: %w", name, err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, err
	}
	st.Sections = map[string]json.RawMessage{}
	for _, n := range st.Header.Sections {
		if v, ok := all[n]; ok {
			st.Sections[n] = v
		}
	}
	return st, nil
}

// FetchSection reads one section's JSON.
func FetchSection(ctx context.Context, dir, name, section string) (json.RawMessage, error) {
	return get(ctx, dir, name, "/status/"+section)
}

func get(ctx context.Context, dir, name, path string) ([]byte, error) {
	sock := SocketPath(dir, name)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://netchan"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, dialError(dir, name, sock, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("control: reading from %s: %w", sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("control: instance %q: %s", name, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func dialError(dir, name, sock string, err error) error {
	others := ""
	if names, _ := Running(dir); len(names) > 0 {
		others = fmt.Sprintf("; running: %s (choose one with --instance NAME)", strings.Join(names, ", "))
	} else {
		others = "; no instance is running at all"
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w %q (no socket %s)%s", ErrNotRunning, name, sock, others)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w %q (the socket %s was left by a process that died; the next instance of that name removes it)%s", ErrNotRunning, name, sock, others)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("cannot connect to %s: %w: run netchan status as root (sudo)", sock, err)
	}
	return fmt.Errorf("control: connecting to %s: %w", sock, err)
}

// Running lists the names of live instances under dir: those whose lock is held.
func Running(dir string) ([]string, error) {
	if dir == "" {
		dir = DefaultDir
	}
	m, err := filepath.Glob(filepath.Join(dir, "*.sock"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, sock := range m {
		name := strings.TrimSuffix(filepath.Base(sock), ".sock")
		if held(lockPath(dir, name)) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// held reports whether a live process holds the lock file. F_OFD_GETLK asks without taking
// the lock, so a listing never makes a starting instance think its name is taken.
func held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// RemoveStale removes the sockets and lock files of instances under dir ("" means DefaultDir)
// whose names start with prefix and that no live process holds: what killed instances leave.
// It takes each name's lock as Listen does before removing anything, so it never removes the
// socket of an instance that is starting or running.
func RemoveStale(dir, prefix string) error {
	if dir == "" {
		dir = DefaultDir
	}
	var names []string
	for _, pat := range []string{"*.sock", "*.lock"} {
		m, err := filepath.Glob(filepath.Join(dir, prefix+pat))
		if err != nil {
			return err
		}
		for _, p := range m {
			name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(p), ".sock"), ".lock")
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	var errs []error
	for _, name := range names {
		lock, err := takeLock(dir, name)
		if err != nil {
			if !errors.Is(err, ErrInstanceRunning) {
				errs = append(errs, err)
			}
			continue
		}
		if err := os.Remove(SocketPath(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		os.Remove(lockPath(dir, name))
		lock.Close()
	}
	return errors.Join(errs...)
}
