package nat

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// TestSetTimeouts changes the UDP timeout of a running shard both ways: a longer one keeps a
// mapping the configured one would have expired, a shorter one expires it at the next scan.
func TestSetTimeouts(t *testing.T) {
	fx := newFixture(t, Config{Timeouts: Timeouts{UDP: time.Second}, MaxMappings: 1000}, 0, 1) // one scan covers the arena
	if got := fx.n.Timeouts(); got.UDP != time.Second || got.TCPEstablished != 2*time.Hour+4*time.Minute || got.ICMP != time.Minute {
		t.Fatalf("timeouts in force: %+v", got)
	}
	if err := fx.n.SetTimeouts(Timeouts{UDP: time.Hour}); err != nil {
		t.Fatal(err)
	}
	fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, 53, 64)})
	fx.h.Advance(3 * time.Second)
	fx.h.Step()
	if st := fx.n.Stats(); st.Active != 1 {
		t.Fatalf("with UDP 1h, a mapping idle 3s expired: %+v", st)
	}
	if err := fx.n.SetTimeouts(Timeouts{UDP: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	fx.h.Advance(20 * time.Millisecond) // the next expiry scan
	fx.h.Step()
	if st := fx.n.Stats(); st.Active != 0 || st.Expired != 1 {
		t.Fatalf("with UDP 2s, a mapping idle 3s stayed: %+v", st)
	}
	if got := fx.n.Timeouts(); got.UDP != 2*time.Second || got.TCPTransitory != 4*time.Minute {
		t.Fatalf("timeouts in force after SetTimeouts: %+v (zero fields take the defaults)", got)
	}
	if err := fx.n.SetTimeouts(Timeouts{ICMP: -time.Second}); err == nil || !strings.Contains(err.Error(), "icmp") {
		t.Fatalf("a negative ICMP timeout: %v", err)
	}
	if got := fx.n.Timeouts(); got.UDP != 2*time.Second {
		t.Fatalf("a refused SetTimeouts changed the timeouts: %+v", got)
	}
}

// TestSetForwards adds a forward to a running shard, removes it, and adds one whose external
// port a dynamic mapping holds: it waits until the mapping expires.
func TestSetForwards(t *testing.T) {
	fx := newFixture(t, Config{Timeouts: Timeouts{UDP: time.Second}, MaxMappings: 1000}, 0, 1) // one scan covers the arena
	in := func(port uint16) int {
		return len(fx.h.Step(stagetest.In{If: Outside, Data: udpIn(t, server, 4444, outside, port)}))
	}
	if in(8080) != 0 {
		t.Fatal("port 8080 forwarded before any forward")
	}
	fw := Forward{Proto: header.ProtoUDP, ExtPort: 8080, Inside: netip.AddrPortFrom(client, 80)}
	if err := fx.n.SetForwards([]Forward{fw}); err != nil {
		t.Fatal(err)
	}
	fx.h.Advance(20 * time.Millisecond)
	fx.h.Step()
	if in(8080) != 1 {
		t.Fatalf("the new forward does not forward: drops %v", fx.h.Drops())
	}
	if err := fx.n.SetForwards(nil); err != nil {
		t.Fatal(err)
	}
	fx.h.Advance(20 * time.Millisecond)
	fx.h.Step()
	if in(8080) != 0 || len(fx.n.Forwards()) != 0 {
		t.Fatal("a removed forward still forwards")
	}

	// client2's outbound flow from port 9000 keeps external port 9000 (port preservation).
	fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client2, client2MAC, 9000, server, 53, 64)})
	busy := Forward{Proto: header.ProtoUDP, ExtPort: 9000, Inside: netip.AddrPortFrom(client, 90)}
	if err := fx.n.SetForwards([]Forward{busy}); err != nil {
		t.Fatal(err)
	}
	fx.h.Advance(20 * time.Millisecond)
	fx.h.Step()
	if st := fx.n.Stats(); st.ForwardsPending != 1 {
		t.Fatalf("a forward of a busy port: %+v, want it pending", st)
	}
	fx.h.Advance(1500 * time.Millisecond) // the dynamic mapping expires, the forward takes the port
	fx.h.Step()
	fx.h.Advance(20 * time.Millisecond)
	fx.h.Step()
	if st := fx.n.Stats(); st.ForwardsPending != 0 {
		t.Fatalf("the forward still waits after the mapping expired: %+v", st)
	}
	out := fx.h.Step(stagetest.In{If: Outside, Data: udpIn(t, server, 4444, outside, 9000)})
	if len(out) != 1 || check(t, out[0].Data).udp.DstPort != 90 {
		t.Fatalf("the forward of port 9000 after it was freed: %d frames, drops %v", len(out), fx.h.Drops())
	}
}

// TestSetForwardsRefused: bad forwards are refused and the old ones stay.
func TestSetForwardsRefused(t *testing.T) {
	fw := Forward{Proto: header.ProtoTCP, ExtPort: 2222, Inside: netip.AddrPortFrom(client, 22)}
	fx := newFixture(t, Config{Forwards: []Forward{fw}}, 0, 1)
	for _, bad := range [][]Forward{
		{{Proto: header.ProtoTCP, ExtPort: 2222, Inside: netip.MustParseAddrPort("10.0.0.1:22")}},
		{{Proto: header.ProtoICMP, ExtPort: 1, Inside: netip.AddrPortFrom(client, 1)}},
		{fw, {Proto: header.ProtoTCP, ExtPort: 2222, Inside: netip.AddrPortFrom(client2, 22)}},
		{{Proto: header.ProtoUDP, ExtPort: 0, Inside: netip.AddrPortFrom(client, 22)}},
	} {
		if err := fx.n.SetForwards(bad); err == nil {
			t.Errorf("SetForwards(%v) accepted", bad)
		}
	}
	if got := fx.n.Forwards(); len(got) != 1 || got[0] != fw {
		t.Fatalf("forwards after refused changes: %v", got)
	}
}

// TestSetTimeoutsConcurrent swaps timeouts and forwards from other goroutines while the shard
// scans (go test -race checks the readers).
func TestSetTimeoutsConcurrent(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			fx.n.SetTimeouts(Timeouts{UDP: time.Duration(1+i%5) * time.Minute})
			fx.n.SetForwards([]Forward{{Proto: header.ProtoUDP, ExtPort: uint16(8000 + i%3), Inside: netip.AddrPortFrom(client, 80)}})
			_ = fx.n.Stats()
		}
	}()
	for i := 0; i < 200; i++ {
		fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client2, client2MAC, uint16(10000+i), server, 53, 64)})
		fx.h.Advance(11 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}
