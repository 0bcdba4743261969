package stack

import (
	"testing"
	"time"
)

// A TIME_WAIT connection its user has closed holds no rings (releaseBuffers): the 2 MSL wait
// must not keep 512 KiB per connection. One still open to its user keeps them until Close.
func TestTCPTimeWaitReleasesRings(t *testing.T) {
	p := newTCPPair(t, TCPConfig{TimeWait: 2 * time.Second})
	c, s := p.connect(9)
	p.transfer(c, s, 5000, time.Second)
	c.Close() // active close, by the user: the client's end goes to TIME_WAIT closed
	p.run(time.Second, func() bool { return s.tcb.state == stCloseWait })
	s.Close()
	p.run(time.Second, func() bool { return c.tcb.state == stTimeWait })
	if c.rbuf != nil || c.sbuf != nil {
		t.Errorf("TIME_WAIT after Close still holds rings of %d and %d bytes", len(c.rbuf), len(c.sbuf))
	}

	// Half-close: the user shuts its side (our FIN), the peer closes, and the connection is in
	// TIME_WAIT while its user may still read: the rings stay until the user closes it.
	c2, s2 := p.connect(10)
	p.transfer(s2, c2, 3000, time.Second)
	if err := c2.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	p.run(time.Second, func() bool { return s2.tcb.state == stCloseWait })
	s2.Write([]byte("last words"))
	s2.Close()
	p.run(time.Second, func() bool { return c2.tcb.state == stTimeWait })
	if c2.rbuf == nil || c2.sbuf == nil {
		t.Fatal("rings released before the user closed the connection")
	}
	buf := make([]byte, 64)
	if n, err := c2.Read(buf); string(buf[:n]) != "last words" || err != nil {
		t.Fatalf("read in TIME_WAIT: %q %v", buf[:n], err)
	}
	c2.Close()
	p.run(time.Second, func() bool { return c2.rbuf == nil })
	if c2.sbuf != nil || c2.tcb.state != stTimeWait {
		t.Errorf("after Close in TIME_WAIT: send ring %d bytes, state %v", len(c2.sbuf), c2.tcb.state)
	}
	p.run(5*time.Second, func() bool { return c.tcb.idx < 0 && c2.tcb.idx < 0 })
}
