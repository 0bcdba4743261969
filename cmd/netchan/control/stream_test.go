package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestStream: a stream sends as it goes; Stop ends it and the client still reads what it
// writes last; an argument error before the first byte is the request's error; an unknown
// stream is named; Close ends a running stream at once.
func TestStream(t *testing.T) {
	dir := t.TempDir()
	s := listen(t, dir, "st")
	s.AddStream("ticks", func(ctx context.Context, args url.Values, w StreamWriter) error {
		if args.Get("bad") != "" {
			return errors.New("bad argument")
		}
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				fmt.Fprintln(w, "bye")
				w.Flush()
				return nil
			case <-time.After(5 * time.Millisecond):
			}
			fmt.Fprintln(w, "tick", i)
			if err := w.Flush(); err != nil {
				return nil
			}
		}
	})
	ctx := context.Background()
	st, err := OpenStream(ctx, dir, "st", "ticks", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ID == "" {
		t.Fatal("no stream id")
	}
	r := bufio.NewScanner(st)
	for i := 0; i < 3; i++ {
		if !r.Scan() || r.Text() != fmt.Sprint("tick ", i) {
			t.Fatalf("line %d: %q", i, r.Text())
		}
	}
	if err := st.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	last := ""
	for r.Scan() {
		last = r.Text()
	}
	if last != "bye" {
		t.Errorf("after Stop the stream ended with %q, want bye", last)
	}
	st.Close()

	if _, err := OpenStream(ctx, dir, "st", "ticks", url.Values{"bad": {"1"}}); err == nil || !strings.Contains(err.Error(), "bad argument") {
		t.Errorf("argument error: %v", err)
	}
	if _, err := OpenStream(ctx, dir, "st", "nosuch", nil); err == nil || !strings.Contains(err.Error(), `no stream "nosuch"`) || !strings.Contains(err.Error(), "ticks") {
		t.Errorf("unknown stream: %v", err)
	}

	st, err = OpenStream(ctx, dir, "st", "ticks", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close with a stream running: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Close waited %v for the stream", d)
	}
}
