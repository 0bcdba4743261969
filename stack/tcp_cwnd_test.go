package stack

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateCwnd = flag.Bool("update-cwnd", false, "rewrite testdata/cwnd/*.txt from the current code")

// cwndScenario is a seeded-loss transfer from A to B whose congestion window trajectory is
// compared with one recorded from the code before congestion control moved behind an
// interface (testdata/cwnd): the move was to change no window, so any difference is a bug.
type cwndScenario struct {
	name   string
	cfg    TCPConfig
	n      int           // bytes A sends
	seed   uint64        // of the loss pattern
	dataP  float64       // loss probability of A's data segments
	ackP   float64       // loss probability of B's segments (ACKs)
	outAt  int           // A's data segment (1-based) that starts an outage of A's data (0: none)
	outFor time.Duration // how long the outage lasts
}

var cwndScenarios = []cwndScenario{
	// SACK recovery, lost retransmissions and tail loss probes at 1% loss each way.
	{name: "sack-1pct", cfg: TCPConfig{CongestionControl: NewReno}, n: 4 << 20, seed: 1, dataP: 0.01, ackP: 0.01},
	// Heavier loss, and an outage of 250 ms that outlasts the first RTO (200 ms).
	{name: "sack-5pct-outage", cfg: TCPConfig{CongestionControl: NewReno}, n: 4 << 20, seed: 2, dataP: 0.05, ackP: 0.02, outAt: 1000, outFor: 250 * time.Millisecond},
	// NewReno without SACK: duplicate ACKs inflate the window, partial ACKs deflate it.
	{name: "nosack-2pct", cfg: TCPConfig{NoSACK: true, CongestionControl: NewReno}, n: 4 << 20, seed: 3, dataP: 0.02, ackP: 0.01},
}

// cwndTrajectory runs sc and returns A's (cwnd, ssthresh) after every round in which they
// changed, with the simulated time since the transfer began, then A's loss counters.
func cwndTrajectory(t *testing.T, sc cwndScenario) (string, TCPStats) {
	t.Helper()
	p := newTCPPair(t, sc.cfg)
	c, s := p.connect(7)
	rng := rand.New(rand.NewPCG(sc.seed, 0))
	data := 0
	var outEnd int64
	p.fault = func(dir int, f []byte) [][]byte {
		if dir == 0 && dataLen(f) > 0 {
			if data++; data == sc.outAt {
				outEnd = p.now + int64(sc.outFor)
			}
			if p.now < outEnd {
				return nil
			}
			if rng.Float64() < sc.dataP {
				return nil
			}
		} else if dir == 1 && rng.Float64() < sc.ackP {
			return nil
		}
		return [][]byte{f}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: A sends %d bytes to B; µs since the start, A's cwnd and ssthresh after each round that changed them\n", sc.name, sc.n)
	start := p.now
	var lastC, lastS uint32
	record := func() {
		cw, ss := s.tcb.cc.cwnd, s.tcb.cc.ssthresh
		if cw != lastC || ss != lastS {
			fmt.Fprintf(&b, "%d %d %d\n", (p.now-start)/1000, cw, ss)
			lastC, lastS = cw, ss
		}
	}
	record()
	// transfer's condition runs once per round: it records the round before.
	p.transferEach(s, c, sc.n, 60*time.Second, record)
	st := p.a.Stats().TCP
	fmt.Fprintf(&b, "# done at %d µs: retransmits %d, fast retransmits %d, lost retransmits %d, tail loss probes %d, timeouts %d, spurious RTOs %d\n",
		(p.now-start)/1000, st.Retransmits, st.FastRetransmits, st.LostRetransmits, st.TailLossProbes, st.Timeouts, st.SpuriousRTOs)
	return b.String(), st
}

// TestTCPCwndTrajectory replays seeded-loss transfers and compares A's congestion window,
// round by round, with the trajectory recorded before congestion control moved behind the
// ccAlgo interface. Run with -update-cwnd only for a change meant to alter NewReno's windows.
func TestTCPCwndTrajectory(t *testing.T) {
	for _, sc := range cwndScenarios {
		t.Run(sc.name, func(t *testing.T) {
			got, st := cwndTrajectory(t, sc)
			// The scenario must exercise what it is for: recovery, and an RTO after the burst.
			if st.FastRetransmits == 0 || (sc.outAt > 0 && st.Timeouts == 0) {
				t.Errorf("the losses did not exercise recovery: %s", lastLine(got))
			}
			path := filepath.Join("testdata", "cwnd", sc.name+".txt")
			if *updateCwnd {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("wrote %s: %s", path, lastLine(got))
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update-cwnd to record it)", err)
			}
			if !bytes.Equal([]byte(got), want) {
				gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
				for i := 0; i < max(len(gl), len(wl)); i++ {
					g, w := at(gl, i), at(wl, i)
					if g != w {
						t.Fatalf("trajectory differs from %s at line %d:\n got  %q\n want %q\ngot  %s\nwant %s",
							path, i+1, g, w, lastLine(got), lastLine(string(want)))
					}
				}
			}
		})
	}
}

func at(l []string, i int) string {
	if i < len(l) {
		return l[i]
	}
	return "<end>"
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// transferEach is transfer with each called once per round, before the round's condition.
func (p *tcpPair) transferEach(src, dst *TCPConn, n int, limit time.Duration, each func()) {
	p.t.Helper()
	sent, got := 0, 0
	buf := make([]byte, 64<<10)
	p.run(limit, func() bool {
		each()
		if sent < n {
			if room := src.sendRoom(); room > 0 {
				chunk := make([]byte, min(n-sent, room))
				for i := range chunk {
					chunk[i] = byte((sent + i) * 7)
				}
				k, err := src.Write(chunk)
				if err != nil {
					p.t.Fatal(err)
				}
				sent += k
			}
		}
		for dst.readable() > 0 {
			k, err := dst.Read(buf)
			if err != nil {
				p.t.Fatal(err)
			}
			for i := 0; i < k; i++ {
				if buf[i] != byte((got+i)*7) {
					p.t.Fatalf("byte %d: got %d, want %d", got+i, buf[i], byte((got+i)*7))
				}
			}
			got += k
		}
		return got >= n
	})
}

// TestTCPCUBICScenarios runs the seeded-loss transfers of TestTCPCwndTrajectory with CUBIC:
// every byte arrives in order (transferEach checks them), and the figures are logged beside
// NewReno's. On this fake path (an RTT of about 100 µs) CUBIC is in its Reno-friendly region;
// where an outage falls against the RTO timer depends on the trajectory before it, so one
// algorithm's RTO can come before the outage ends and the other's after.
func TestTCPCUBICScenarios(t *testing.T) {
	for _, sc := range cwndScenarios {
		t.Run(sc.name, func(t *testing.T) {
			cu := sc
			cu.cfg.CongestionControl = CUBIC
			got, st := cwndTrajectory(t, cu)
			nr, _ := cwndTrajectory(t, sc)
			if st.FastRetransmits == 0 {
				t.Errorf("no recovery: %s", lastLine(got))
			}
			t.Logf("CUBIC:   %s", lastLine(got))
			t.Logf("NewReno: %s", lastLine(nr))
		})
	}
}
