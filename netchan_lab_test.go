package netchan_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

func TestMain(m *testing.M) {
	nschild.Register("soak-client", soakClient)
	nschild.Register("soak-server", soakServer)
	nschild.RunIfChild()
	trafficgen.RunChildIfAsked()
	labtest.SweepStale()
	os.Exit(m.Run())
}

func reflectApp(claims ...claim.Rule) netchan.App {
	return netchan.App{Name: "reflect", Claims: claims,
		NewPipeline: func(int) *pipelines.Pipeline { return &pipelines.Pipeline{Stages: []pipelines.Stage{basic.Reflect()}} }}
}

// TestLabTwoOwners: the App and a second owner both claim udp:9999 through the front door;
// releasing either one leaves the other's traffic flowing, and only when both let go does UDP
// to 9999 go back to the kernel.
func TestLabTwoOwners(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	port := claim.Ports(17, netip.Addr{}, 9999, 9999)
	in, err := netchan.Start(netchan.Config{Interfaces: []string{ep.Iface}, Logf: t.Logf}, reflectApp(port))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	exe, _ := os.Executable()
	id := uint32(0)
	reflected := func() uint64 {
		t.Helper()
		id++
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg := trafficgen.Config{Iface: ep.Peer.Iface, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
			SrcPort: 5000, DstPort: 9999, Count: 200, Rate: 20000, RunID: id, Verify: true, Wait: time.Second}
		out, err := trafficgen.Command(ctx, ep.Peer.NS, []string{exe}, cfg).Output()
		if err != nil {
			t.Fatal(err)
		}
		r, err := trafficgen.Decode(out)
		if err != nil {
			t.Fatal(err)
		}
		if r.Sent != 200 {
			t.Fatalf("sent %d of 200", r.Sent)
		}
		return r.Received
	}
	if err := in.Claim("second", port); err != nil {
		t.Fatal(err)
	}
	cl := in.Claims()
	if len(cl) != 1 || len(cl[0].Claims) != 2 {
		t.Fatalf("claims %+v: want reflect and second holding udp:9999", cl)
	}
	if err := in.Unclaim("reflect", port); err != nil {
		t.Fatal(err)
	}
	if n := reflected(); n != 200 {
		t.Fatalf("the App let go of udp:9999 while a second owner holds it: %d of 200 reflected", n)
	}
	if err := in.Claim("reflect", port); err != nil {
		t.Fatal(err)
	}
	if err := in.Unclaim("second", port); err != nil {
		t.Fatal(err)
	}
	if n := reflected(); n != 200 {
		t.Fatalf("the second owner let go of udp:9999 while the App holds it: %d of 200 reflected", n)
	}
	if err := in.Unclaim("reflect", port); err != nil {
		t.Fatal(err)
	}
	if n := reflected(); n != 0 {
		t.Fatalf("nobody holds udp:9999, yet %d of 200 were reflected", n)
	}
	if got := in.Claims()[0].Claims; len(got) != 0 {
		t.Fatalf("claims left: %v", got)
	}
	if err := in.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestStartErrors: what Start refuses before it touches anything, and that each error says
// what to do.
func TestStartErrors(t *testing.T) {
	labtest.RequireRoot(t)
	app := reflectApp(claim.All())
	for _, c := range []struct {
		name string
		cfg  netchan.Config
		app  netchan.App
		is   error
	}{
		{"no interfaces", netchan.Config{}, app, nil},
		{"no pipeline", netchan.Config{Interfaces: []string{"lo"}}, netchan.App{Claims: app.Claims}, nil},
		{"no claims", netchan.Config{Interfaces: []string{"lo"}}, reflectApp(), nil},
		{"missing interface", netchan.Config{Interfaces: []string{"nosuch0"}}, app, netchan.ErrNoInterface},
		{"queue out of range", netchan.Config{Interfaces: []string{"lo"}, Queues: []int{7}}, app, netchan.ErrQueueOutOfRange},
	} {
		in, err := netchan.Start(c.cfg, c.app)
		if err == nil {
			in.Stop()
			t.Errorf("%s: Start succeeded", c.name)
			continue
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: %v does not wrap %v", c.name, err, c.is)
		}
		t.Logf("%s: %v", c.name, err)
	}
}
