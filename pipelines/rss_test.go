package pipelines

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// ipv4Frame builds an Ethernet/IPv4 frame with an L4 header's ports.
func ipv4Frame(proto uint8, src, dst [4]byte, sport, dport uint16, fragOff uint16) []byte {
	f := make([]byte, 14+20+8)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], 28)
	binary.BigEndian.PutUint16(ip[6:8], fragOff)
	ip[8], ip[9] = 64, proto
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[20:22], sport)
	binary.BigEndian.PutUint16(ip[22:24], dport)
	return f
}

// TestRSSOwner: the owner is the shard of the queue the Toeplitz hash and table name, with
// ports for TCP (and UDP when the NIC hashes them) and on addresses for fragments and UDP on
// NICs that do not; a queue no shard owns gives -1.
func TestRSSOwner(t *testing.T) {
	table := DefaultRETA(4)
	// Shards own queues 2 and 0; queues 1 and 3 are someone else's.
	for _, udpPorts := range []bool{false, true} {
		r, err := NewRSS(MicrosoftKey[:], table, []int{2, 0}, udpPorts, "test")
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 2000; i++ {
			src := [4]byte{198, 18, byte(rng.IntN(256)), byte(rng.IntN(256))}
			dst := [4]byte{198, 19, 0, byte(rng.IntN(256))}
			sp, dp := uint16(rng.IntN(65536)), uint16(rng.IntN(65536))
			shardOf := func(q int) int {
				switch q {
				case 2:
					return 0
				case 0:
					return 1
				}
				return -1
			}
			withPorts := shardOf(table.Queue(r.Hash.HashIPv4Ports(src, dst, sp, dp)))
			addrsOnly := shardOf(table.Queue(r.Hash.HashIPv4(src, dst)))
			if got := r.Owner(ipv4Frame(6, src, dst, sp, dp, 0), 2); got != withPorts {
				t.Fatalf("TCP: owner %d, want %d", got, withPorts)
			}
			wantUDP := addrsOnly
			if udpPorts {
				wantUDP = withPorts
			}
			if got := r.Owner(ipv4Frame(17, src, dst, sp, dp, 0), 2); got != wantUDP {
				t.Fatalf("UDP (ports hashed %v): owner %d, want %d", udpPorts, got, wantUDP)
			}
			if got := r.Owner(ipv4Frame(6, src, dst, sp, dp, 0x2000), 2); got != addrsOnly {
				t.Fatalf("a first fragment: owner %d, want %d (addresses only)", got, addrsOnly)
			}
		}
	}
}

// TestRSSPickSourcePort: a source port PickSourcePort picks for a queue makes the NIC steer the
// replies to that queue, so the shard that owns it owns the connection.
func TestRSSPickSourcePort(t *testing.T) {
	r, err := NewRSS(MicrosoftKey[:], DefaultRETA(2), []int{0, 1}, true, "test")
	if err != nil {
		t.Fatal(err)
	}
	local, remote := [4]byte{198, 18, 0, 1}, [4]byte{198, 18, 1, 2}
	for shard := 0; shard < 2; shard++ {
		p, ok := r.Hash.PickSourcePort(local, remote, 80, 49152, 65535, r.Table, shard, 50000)
		if !ok {
			t.Fatal("no port")
		}
		// The reply: from remote:80 to local:p.
		if got := r.ShardOf(remote, local, 80, p, true); got != shard {
			t.Fatalf("port %d for shard %d: replies go to shard %d", p, shard, got)
		}
	}
}
