package pipelines

import (
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// refFlowHash and refOwnerBySource are the owner functions as they were written before
// header.IPv4InFrame replaced their hand-written preamble; the new ones must agree on every
// frame.
func refIPv4(data []byte) (off, ihl int) {
	if len(data) < 14+20 || binary.BigEndian.Uint16(data[12:14]) != 0x0800 {
		return -1, 0
	}
	ihl = int(data[14]&0x0f) * 4
	if data[14]>>4 != 4 || ihl < 20 || len(data) < 14+ihl {
		return -1, 0
	}
	return 14, ihl
}

func refFlowHash(data []byte) (h uint32, ok bool) {
	off, ihl := refIPv4(data)
	if off < 0 {
		return 0, false
	}
	a := binary.BigEndian.Uint32(data[off+12 : off+16])
	b := binary.BigEndian.Uint32(data[off+16 : off+20])
	proto := data[off+9]
	h = (a ^ b) + uint32(proto)
	fragOff := binary.BigEndian.Uint16(data[off+6:off+8]) & 0x1fff
	if (proto == 6 || proto == 17) && fragOff == 0 && len(data) >= off+ihl+4 {
		sp := binary.BigEndian.Uint16(data[off+ihl : off+ihl+2])
		dp := binary.BigEndian.Uint16(data[off+ihl+2 : off+ihl+4])
		h += uint32(sp ^ dp)
		h ^= uint32(sp)*uint32(dp) + (uint32(sp)+uint32(dp))<<16
	}
	return mix32(h), true
}

func refOwnerBySource(data []byte, shards int) int {
	off, _ := refIPv4(data)
	if off < 0 || shards <= 1 {
		return -1
	}
	return int(mix32(binary.BigEndian.Uint32(data[off+12:off+16])) % uint32(shards))
}

// ownerSeeds are a UDP datagram 198.18.0.1:49841 → 198.18.0.2:53, a TCP SYN, and an ICMP echo
// request with record-route options (IHL 15).
var ownerSeeds = []string{
	"026e63000002026e63000001080045000050e874000040110601c6120001c6120002c2b10035003ce896532201200001000000000001076578616d706c6503636f6d000001000100002904d000000000000c000a00083b499b559c7e2ceb",
	"026e63000002026e6300000108004500003c9832400040061662c6120001c612000280061f90d3b76e2000000000a002faf01aff0000020405b40402080ac4450031000000000103030a",
	"026e63000002026e6300000108004f00004ca0bd4000400115a9c6120001c612000201072708c612000100000000000000000000000000000000000000000000000000000000000000000800e77d047100010001020304050607",
}

func checkOwners(t *testing.T, data []byte) {
	h, ok := FlowHash(data)
	if rh, rok := refFlowHash(data); h != rh || ok != rok {
		t.Fatalf("FlowHash = %#x, %v; before IPv4InFrame it was %#x, %v", h, ok, rh, rok)
	}
	for _, shards := range []int{1, 2, 3, 8} {
		if got, want := OwnerBySource(data, shards), refOwnerBySource(data, shards); got != want {
			t.Fatalf("OwnerBySource(%d shards) = %d, was %d", shards, got, want)
		}
	}
}

func TestOwnersUnchanged(t *testing.T) {
	for _, s := range ownerSeeds {
		f, _ := hex.DecodeString(s)
		for n := 0; n <= len(f); n++ { // every truncation
			checkOwners(t, f[:n])
		}
		for _, b0 := range []byte{0x00, 0x44, 0x45, 0x46, 0x4f, 0x55, 0x65} { // versions and IHLs
			g := append([]byte(nil), f...)
			g[14] = b0
			checkOwners(t, g)
		}
		for _, frag := range []uint16{0x2000, 0x2001, 0x0001, 0x4000} {
			g := append([]byte(nil), f...)
			binary.BigEndian.PutUint16(g[20:], frag)
			checkOwners(t, g)
		}
	}
	// Symmetry: both directions of a flow hash alike.
	f, _ := hex.DecodeString(ownerSeeds[0])
	r := append([]byte(nil), f...)
	copy(r[26:30], f[30:34])
	copy(r[30:34], f[26:30])
	copy(r[34:36], f[36:38])
	copy(r[36:38], f[34:36])
	if a, _ := FlowHash(f); a != func() uint32 { b, _ := FlowHash(r); return b }() {
		t.Fatal("FlowHash is not symmetric")
	}
}

func FuzzOwnersUnchanged(f *testing.F) {
	for _, s := range ownerSeeds {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkOwners(t, data) })
}
