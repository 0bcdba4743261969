package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// ActionFunc serves one action request: req is the request's JSON body (empty when the
// client sent none); the result is encoded as JSON. An error is sent to the client as the
// request's error (400).
type ActionFunc func(ctx context.Context, req json.RawMessage) (any, error)

// AddAction registers (or replaces) action name, served at POST /action/NAME.
func (s *Server) AddAction(name string, fn ActionFunc) {
	if name == "" || strings.Contains(name, "/") {
		panic(fmt.Sprintf("control: action name %q is invalid", name))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.actions == nil {
		s.actions = map[string]ActionFunc{}
	}
	s.actions[name] = fn
}

// maxActionBody bounds an action request's body.
const maxActionBody = 1 << 20

func (s *Server) handleAction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.RLock()
	fn, ok := s.actions[name]
	var names []string
	for n := range s.actions {
		names = append(names, n)
	}
	s.mu.RUnlock()
	if !ok {
		sort.Strings(names)
		have := "no actions"
		if len(names) > 0 {
			have = strings.Join(names, ", ")
		}
		http.Error(w, fmt.Sprintf("no action %q (this instance serves %s)", name, have), http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxActionBody+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > maxActionBody {
		http.Error(w, fmt.Sprintf("request body over %d bytes", maxActionBody), http.StatusRequestEntityTooLarge)
		return
	}
	res, err := fn(r.Context(), json.RawMessage(bytes.TrimSpace(body)))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b, err := json.Marshal(res)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

// Call runs action on instance name under dir ("" means DefaultDir): req is sent as JSON
// (nil: no body) and the result decoded into res (nil: ignored).
func Call(ctx context.Context, dir, name, action string, req, res any) error {
	var body []byte
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return err
		}
	}
	sock := SocketPath(dir, name)
	tr := transport(sock)
	defer tr.CloseIdleConnections()
	hr, err := http.NewRequestWithContext(ctx, "POST", "http://netchan/action/"+action, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(hr)
	if err != nil {
		return dialError(dir, name, sock, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control: reading from %s: %w", sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("instance %q: %s", name, strings.TrimSpace(string(out)))
	}
	if res == nil {
		return nil
	}
	if err := json.Unmarshal(out, res); err != nil {
		return fmt.Errorf("control: instance %q sent a result that is not JSON: %w", name, err)
	}
	return nil
}
