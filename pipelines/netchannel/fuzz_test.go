package netchannel

import (
	"testing"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines/claim"
)

// FuzzLookup feeds arbitrary frames to the stage's header parsing and flow lookup: it must
// never read past the frame, and it finds a channel only for an IPv4 TCP/UDP first fragment
// whose ports and addresses match an entry.
func FuzzLookup(f *testing.F) {
	f.Add(udpFrame(5000, 9999, "seed"))
	f.Add(udpFrame(5000, 9998, "other port"))
	f.Add([]byte{})
	f.Add(make([]byte, 34))
	set := New(Config{MaxChannels: 4})
	st := newStage(set, 0)
	spec, err := SpecOf(mustParse("udp:198.18.0.1:9999"))
	if err != nil {
		f.Fatal(err)
	}
	if err := st.tree.InsertSpec(spec, flowtree.Handle(1)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		h, ok := st.lookup(frame)
		if !ok {
			return
		}
		if h != 1 {
			t.Fatalf("handle %d", h)
		}
		// A hit is UDP from any port to 198.18.0.1:9999, not a later fragment.
		ip := frame[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 17 || ip[16] != 198 || ip[17] != 18 || ip[18] != 0 || ip[19] != 1 ||
			ip[ihl+2] != 9999>>8 || ip[ihl+3] != 9999&0xff || (int(ip[6])<<8|int(ip[7]))&0x1fff != 0 {
			t.Fatalf("matched a frame that is not the spec's: %x", frame)
		}
	})
}

func mustParse(s string) claim.Rule {
	r, err := claim.Parse(s)
	if err != nil {
		panic(err)
	}
	return r
}
