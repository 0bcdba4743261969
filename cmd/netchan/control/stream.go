package control

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// StreamFunc serves one stream request: it writes to w, flushing as it goes, until it is done
// or ctx ends (the client went away, asked to stop, or the server is closing); after ctx ends
// it may still write a last record (the client that asked to stop reads it). args are the
// request's query parameters. An error returned before anything was written is sent to the
// client as the request's error (400: say what was wrong with args).
type StreamFunc func(ctx context.Context, args url.Values, w StreamWriter) error

// StreamWriter is a stream's response body.
type StreamWriter interface {
	io.Writer
	Flush() error
}

// StreamHeader carries a stream's id in the response.
const StreamHeader = "Netchan-Stream"

// AddStream registers (or replaces) stream name, served at GET /stream/NAME.
func (s *Server) AddStream(name string, fn StreamFunc) {
	if name == "" || strings.Contains(name, "/") {
		panic(fmt.Sprintf("control: stream name %q is invalid", name))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[name] = fn
}

type streamWriter struct {
	w       http.ResponseWriter
	id      string
	started bool
	mu      sync.Mutex
}

func (sw *streamWriter) start() {
	if !sw.started {
		sw.started = true
		sw.w.Header().Set("Content-Type", "application/octet-stream")
		sw.w.Header().Set(StreamHeader, sw.id)
		sw.w.WriteHeader(http.StatusOK)
	}
}

func (sw *streamWriter) Write(b []byte) (int, error) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.start()
	return sw.w.Write(b)
}

func (sw *streamWriter) Flush() error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.start()
	return http.NewResponseController(sw.w).Flush()
}

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.Lock()
	fn, ok := s.streams[name]
	s.nextID++
	id := strconv.FormatUint(s.nextID, 10)
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.closing, cancel)
	s.running[id] = cancel
	s.mu.Unlock()
	defer func() {
		stop()
		cancel()
		s.mu.Lock()
		delete(s.running, id)
		s.mu.Unlock()
	}()
	if !ok {
		http.Error(w, fmt.Sprintf("no stream %q (this instance serves %s)", name, s.streamNames()), http.StatusNotFound)
		return
	}
	sw := &streamWriter{w: w, id: id}
	err := fn(ctx, r.URL.Query(), sw)
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if err != nil && !sw.started {
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}

func (s *Server) streamNames() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var names []string
	for n := range s.streams {
		names = append(names, n)
	}
	if len(names) == 0 {
		return "no streams"
	}
	return strings.Join(names, ", ")
}

func (s *Server) handleStop(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	cancel, ok := s.running[r.PathValue("id")]
	s.mu.RUnlock()
	if !ok {
		http.Error(w, "no such stream (it has ended)", http.StatusNotFound)
		return
	}
	cancel()
	w.WriteHeader(http.StatusNoContent)
}

// Stream is a stream a client opened: read it to its end, Close it when done.
type Stream struct {
	io.ReadCloser
	ID        string
	dir, name string
	tr        *http.Transport
}

func transport(sock string) *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
}

// OpenStream opens stream on instance name under dir ("" means DefaultDir); the stream lasts
// until it ends, ctx ends, or Close.
func OpenStream(ctx context.Context, dir, name, stream string, args url.Values) (*Stream, error) {
	sock := SocketPath(dir, name)
	tr := transport(sock)
	req, err := http.NewRequestWithContext(ctx, "GET", "http://netchan/stream/"+stream+"?"+args.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, dialError(dir, name, sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("instance %q: %s", name, strings.TrimSpace(string(body)))
	}
	return &Stream{ReadCloser: resp.Body, ID: resp.Header.Get(StreamHeader), dir: dir, name: name, tr: tr}, nil
}

// Stop asks the instance to end the stream; keep reading it to get what it sends last.
func (st *Stream) Stop(ctx context.Context) error {
	tr := transport(SocketPath(st.dir, st.name))
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://netchan/stop/"+st.ID, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("stopping stream %s: %s", st.ID, resp.Status)
	}
	return nil
}

// Close ends the stream from the client's side.
func (st *Stream) Close() error {
	err := st.ReadCloser.Close()
	st.tr.CloseIdleConnections()
	return err
}
