package echo

import (
	"io"
	"net/http/httptest"
	"strconv"
	"testing"
)

// GET /bytes/N returns exactly N bytes of BytesPattern, also across the ends of the block it
// is written from.
func TestHTTPBytes(t *testing.T) {
	h := HTTPHandler()
	for _, n := range []int{0, 1, 250, 251, 252, len(patternBlock) - 1, len(patternBlock), len(patternBlock) + 1, 3*len(patternBlock) + 77} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/bytes/"+strconv.Itoa(n), nil))
		body := rec.Body.Bytes()
		if rec.Code != 200 || len(body) != n || rec.Header().Get("Content-Length") != strconv.Itoa(n) {
			t.Fatalf("/bytes/%d: status %d, %d bytes, Content-Length %q", n, rec.Code, len(body), rec.Header().Get("Content-Length"))
		}
		for i, b := range body {
			if b != BytesPattern(i) {
				t.Fatalf("/bytes/%d: byte %d is %d, want %d", n, i, b, BytesPattern(i))
			}
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/bytes/-1", nil))
	if rec.Code != 400 {
		t.Errorf("/bytes/-1: status %d, want 400", rec.Code)
	}
}

// Writing the body allocates nothing, whatever its size.
func TestWritePatternAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { writePattern(io.Discard, 1<<20) }); n != 0 {
		t.Errorf("writePattern allocates %v times per body, want 0", n)
	}
}
