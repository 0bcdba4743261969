package stack

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// testEchoApp echoes what it reads, never reading more than the send ring takes.
type testEchoApp struct {
	buf    []byte
	calls  int
	closed int
}

func (a *testEchoApp) Ready(c *TCPConn) {
	a.calls++
	for {
		n, err := c.TryRead(a.buf[:min(len(a.buf), c.WriteSpace())])
		if n > 0 {
			if k, werr := c.TryWrite(a.buf[:n]); k != n || werr != nil {
				panic("TryWrite took less than WriteSpace promised")
			}
		}
		if err != nil {
			a.closed++
			c.Close()
			return
		}
		if n == 0 {
			return
		}
	}
}

// appPair is a tcpPair whose A listens on port with a testEchoApp; it returns B's end of an
// established connection and the app A's shard made.
func appPair(t *testing.T, port uint16) (*tcpPair, *TCPListener, *TCPConn, *testEchoApp) {
	t.Helper()
	p := newTCPPair(t, TCPConfig{})
	var app *testEchoApp
	made := 0
	l, _, err := p.a.listenTCPWith(netip.AddrPortFrom(netip.IPv4Unspecified(), port), 0, func(shard int) TCPApp {
		if shard != 0 {
			t.Errorf("app made for shard %d, want 0", shard)
		}
		made++
		app = &testEchoApp{buf: make([]byte, 16<<10)}
		return app
	})
	if err != nil {
		t.Fatal(err)
	}
	p.round()
	c, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, port))
	if err != nil {
		t.Fatal(err)
	}
	p.run(time.Second, func() bool { return tcpState(c.pub.state.Load()) == stEstablished && app != nil && app.calls > 0 })
	if made != 1 {
		t.Fatalf("%d apps made for one shard", made)
	}
	return p, l, c, app
}

// TestTCPAppEchoSamePass checks that a request is answered in the pass it arrives in, with
// one segment that carries both the echo and the ACK (no separate pure ACK, no delayed ACK).
func TestTCPAppEchoSamePass(t *testing.T) {
	p, _, c, _ := appPair(t, 7)
	req := bytes.Repeat([]byte("q"), 128)
	got := make([]byte, 256)
	for i := 0; i < 50; i++ {
		req[0] = byte(i)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		p.round() // B sends the request
		before := p.sentFrames[0]
		p.capture, p.captured = true, nil
		p.round() // A receives it and answers
		p.capture = false
		if n := p.sentFrames[0] - before; n != 1 {
			t.Fatalf("request %d: A sent %d frames in the pass the request arrived, want 1", i, n)
		}
		var fromA []byte
		for _, f := range p.captured {
			if bytes.Equal(f[0:6], peerMAC[:]) {
				fromA = f
			}
		}
		if fromA == nil || dataLen(fromA) != 128 {
			t.Fatalf("request %d: A's frame is not the 128-byte echo", i)
		}
		_, tcp := decodeTCP(t, fromA)
		if !tcp.ACK || tcp.Ack != c.tcb.sndNxt {
			t.Fatalf("request %d: echo acks %d, want %d (the request's end)", i, tcp.Ack, c.tcb.sndNxt)
		}
		p.round()
		n, err := c.Read(got)
		if err != nil || !bytes.Equal(got[:n], req) {
			t.Fatalf("request %d: read %d bytes %v, want the request back", i, n, err)
		}
	}
}

// TestTCPAppEchoBulkAndFlowControl sends 4 MB through the app: first while the client does not
// read (the app must stop reading when its send ring is full, so the client's writes stall
// with nothing lost), then reading everything back and comparing.
func TestTCPAppEchoBulkAndFlowControl(t *testing.T) {
	p, _, c, _ := appPair(t, 7)
	const n = 4 << 20
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*13 + i>>9)
	}
	sent := 0
	for i := 0; i < 20000; i++ { // 1 s of simulated time, ~100 round trips
		if room := c.sendRoom(); room > 0 && sent < n {
			k, err := c.Write(data[sent:min(n, sent+room)])
			if err != nil {
				t.Fatal(err)
			}
			sent += k
		}
		p.round()
	}
	t.Logf("client wrote %d bytes before flow control held it", sent)
	// Both rings of both ends are 256 KiB: at most about 4 × 256 KiB can be in flight.
	if sent >= n || sent > 5*256<<10 {
		t.Fatalf("client wrote %d bytes without reading any echo: flow control did not hold", sent)
	}
	if s := p.a.TCPConns(); len(s) != 1 || s[0].State != "ESTABLISHED" {
		t.Fatalf("server connection: %+v", s)
	}
	got := make([]byte, 0, n)
	buf := make([]byte, 64<<10)
	p.run(30*time.Second, func() bool {
		if room := c.sendRoom(); room > 0 && sent < n {
			k, _ := c.Write(data[sent:min(n, sent+room)])
			sent += k
		}
		for c.readable() > 0 {
			k, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, buf[:k]...)
		}
		return len(got) >= n
	})
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, not what was sent", len(got))
	}
}

// TestTCPAppCloseAndListenerClose checks the ends of an app's life: the client's FIN reaches
// the app as EOF and the app's Close sends its FIN after the echoes; a closed app listener
// refuses new connections while its established ones keep being served.
func TestTCPAppCloseAndListenerClose(t *testing.T) {
	p, l, c, app := appPair(t, 7)
	c2, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, 7))
	if err != nil {
		t.Fatal(err)
	}
	p.run(time.Second, func() bool {
		est := 0
		for _, s := range p.a.TCPConns() {
			if s.State == "ESTABLISHED" {
				est++
			}
		}
		return est == 2
	})
	l.Close()
	p.round()
	c3 := p.dialUntilDone(7)
	if _, err := c3.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after the listener closed: %v, want connection refused", err)
	}
	msg := []byte("still served after the listener closed")
	c2.Write(msg)
	c2.CloseWrite()
	var got []byte
	buf := make([]byte, 100)
	p.run(time.Second, func() bool {
		for c2.readable() > 0 {
			n, _ := c2.Read(buf)
			got = append(got, buf[:n]...)
		}
		return c2.tcb.finRcvd
	})
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
	if n, err := c2.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the app's FIN: %d %v, want EOF", n, err)
	}
	if app.closed != 1 {
		t.Fatalf("app closed %d connections, want 1", app.closed)
	}
	c2.Close()
	p.run(5*time.Second, func() bool { return len(p.a.TCPConns()) == 1 }) // only c is left
	_ = c
}

// TestTCPAppEchoAllocs checks that serving a request through an app allocates nothing: the
// segment in, the app's TryRead and TryWrite, the echo (with the ACK) out.
func TestTCPAppEchoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; the test script runs this without -race")
	}
	p, _, _, _ := appPair(t, 7)
	p.run(time.Second, func() bool { return len(p.a.TCPConns()) == 1 })
	var s *TCPConn
	for x := range p.a.tcp.conns {
		s = x
	}
	k := &s.tcb
	payload := make([]byte, 128)
	var o header.TCPOptions
	frame := craft(t, s, k.rcvNxt, k.sndNxt, header.TCPFlagACK|header.TCPFlagPSH, &o, payload)
	a := testing.AllocsPerRun(200, func() {
		b := p.passA(s, frame, k.rcvNxt, k.sndNxt) // the ACK frees the send ring of the previous echo
		if len(b.Pkts) != 2 || b.Pkts[1].Verdict != pipelines.Transmit || dataLen(b.Data(1)) != 128 {
			t.Fatalf("no echo in the pass: %d packets", len(b.Pkts))
		}
	})
	if a != 0 {
		t.Fatalf("an echoed request allocates %v times", a)
	}
}
