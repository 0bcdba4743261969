package stack

import (
	"testing"
	"time"
)

// TestRTTEstimator checks RFC 6298's arithmetic: the first sample, the smoothing of later
// ones, the clamps, and a backoff bounded by the configured maximum however long it runs.
func TestRTTEstimator(t *testing.T) {
	ms := int64(time.Millisecond)
	cfg := TCPConfig{MinRTO: 200 * time.Millisecond, MaxRTO: 3 * time.Second}
	cfg.setDefaults()
	var e rttEstimator
	e.init(&cfg)
	if got := e.timeout(); got != int64(time.Second) {
		t.Fatalf("initial timeout %v, want InitialRTO 1s", time.Duration(got))
	}
	e.sample(100 * ms) // §2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR
	if e.srtt != 100*ms || e.rttvar != 50*ms || e.rto != 300*ms {
		t.Fatalf("after 100ms: srtt %v rttvar %v rto %v, want 100ms 50ms 300ms", time.Duration(e.srtt), time.Duration(e.rttvar), time.Duration(e.rto))
	}
	e.sample(20 * ms) // §2.3: RTTVAR = 3/4·50 + 1/4·|100-20| = 57.5, SRTT = 7/8·100 + 1/8·20 = 90
	if e.srtt != 90*ms || e.rttvar != 57500*int64(time.Microsecond) || e.rto != 320*ms {
		t.Fatalf("after 20ms: srtt %v rttvar %v rto %v, want 90ms 57.5ms 320ms", time.Duration(e.srtt), time.Duration(e.rttvar), time.Duration(e.rto))
	}
	for range 50 {
		e.sample(ms / 10)
	}
	if e.rto != 200*ms {
		t.Fatalf("rto %v on a 100µs path, want the 200ms minimum", time.Duration(e.rto))
	}
	want := []time.Duration{200, 400, 800, 1600, 3000, 3000}
	for i, w := range want {
		e.backoff = i
		if got := time.Duration(e.timeout()); got != w*time.Millisecond {
			t.Errorf("backoff %d: timeout %v, want %v", i, got, w*time.Millisecond)
		}
	}
	for _, b := range []int{40, 62, 63, 64, 1000} { // no overflow past the maximum
		e.backoff = b
		if got := time.Duration(e.timeout()); got != 3*time.Second {
			t.Errorf("backoff %d: timeout %v, want MaxRTO 3s", b, got)
		}
	}
	e.sample(10 * time.Second.Nanoseconds())
	if e.backoff != 0 || e.rto != 3*time.Second.Nanoseconds() {
		t.Errorf("after a 10s sample: backoff %d, rto %v; want 0 and MaxRTO 3s", e.backoff, time.Duration(e.rto))
	}
}

// TestTCPRTOBackoffMax: the retransmission timer doubles up to TCPConfig.MaxRTO and stays
// there (the cap was a fixed 60 s whatever MaxRTO said).
func TestTCPRTOBackoffMax(t *testing.T) {
	p := newTCPPair(t, TCPConfig{TLPAlwaysInflate: true, MaxRTO: time.Second})
	c, s := p.connect(7)
	p.transfer(s, c, 10000, time.Second) // RTT samples: the RTO settles at MinRTO
	p.run(time.Second, func() bool { return s.tcb.sndUna == s.tcb.sndMax })
	var times []int64
	p.fault = func(dir int, f []byte) [][]byte {
		if dir == 0 && dataLen(f) > 0 {
			times = append(times, p.now)
			return nil
		}
		return [][]byte{f}
	}
	s.Write([]byte("lost"))
	p.run(20*time.Second, func() bool { return len(times) >= 8 })
	want := []time.Duration{200, 400, 800, 1000, 1000, 1000, 1000}
	for i, w := range want {
		got := time.Duration(times[i+1] - times[i])
		if got < w*time.Millisecond || got > w*time.Millisecond+5*time.Millisecond {
			t.Errorf("interval %d: %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if rto := s.Stats().RTO; rto != time.Second {
		t.Errorf("ConnStats.RTO %v during the backoff, want MaxRTO 1s", rto)
	}
	p.fault = nil
	p.run(5*time.Second, func() bool { return c.readable() == 4 })
}
