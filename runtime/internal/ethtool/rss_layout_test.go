//go:build amd64 || arm64 || riscv64 || loong64 || ppc64le

package ethtool

// The byte literals here are the structs of include/uapi/linux/ethtool.h as a little-endian
// 64-bit kernel lays them out (the build line keeps them to such machines). They need no root.
// "captured" ones were read from Linux 6.18 (veth, in a namespace); the others are built by hand
// from the uapi field list, as no device here has RSS to capture from.

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/netchan/netchan/pipelines"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %x\nwant %x", what, got, want)
	}
}

// struct ethtool_rxfh { u32 cmd @0; u32 rss_context @4; u32 indir_size @8; u32 key_size @12;
// u8 hfunc @16; u8 input_xfrm @17; u8 rsvd8[2] @18; u32 rsvd32 @20; u32 rss_config[] @24 }
// (indirection table, then key).
func TestRxfhEncode(t *testing.T) {
	// ETHTOOL_GRSSH asking for the sizes: everything but cmd zero.
	sameBytes(t, "GRSSH sizes", rxfh{cmd: 0x46}.encode(nil, nil),
		unhex(t, "46000000 00000000 00000000 00000000 00 00 0000 00000000"))

	// ETHTOOL_GRSSH with the sizes: room for 4 entries and an 8-byte key after the header.
	get := rxfh{cmd: 0x46, indirSize: 4, keySize: 8}.encode(nil, nil)
	sameBytes(t, "GRSSH 4+8", get, unhex(t, `46000000 00000000 04000000 08000000 00 00 0000 00000000
		00000000 00000000 00000000 00000000  0000000000000000`))

	// ETHTOOL_SRSSH for symmetric-xor: table unchanged (ETH_RXFH_INDIR_NO_CHANGE), no key,
	// hfunc 0 (no change), input_xfrm RXH_XFRM_SYM_XOR.
	sameBytes(t, "SRSSH sym-xor",
		rxfh{cmd: 0x47, indirSize: rxfhIndirNoChange, inputXfrm: uint8(XfrmSymXor)}.encode(nil, nil),
		unhex(t, "47000000 00000000 ffffffff 00000000 00 01 0000 00000000"))

	// ETHTOOL_SRSSH for the symmetric key: table unchanged, so the key starts right at
	// rss_config (the kernel reads it at rss_config + 0 when indir_size is NO_CHANGE);
	// hfunc ETH_RSS_HASH_TOP; input_xfrm RXH_XFRM_NO_CHANGE.
	key := symmetricKey(40)
	sameBytes(t, "SRSSH key",
		rxfh{cmd: 0x47, indirSize: rxfhIndirNoChange, keySize: 40, hfunc: hashTop, inputXfrm: rxhXfrmNoChange}.encode(nil, key),
		unhex(t, `47000000 00000000 ffffffff 28000000 01 ff 0000 00000000
			6d5a6d5a6d5a6d5a 6d5a6d5a6d5a6d5a 6d5a6d5a6d5a6d5a 6d5a6d5a6d5a6d5a 6d5a6d5a6d5a6d5a`))

	// A set with a table: entries first, key after them.
	sameBytes(t, "SRSSH table+key",
		rxfh{cmd: 0x47, indirSize: 2, keySize: 4}.encode([]uint32{1, 0x01020304}, []byte{0xaa, 0xbb, 0xcc, 0xdd}),
		unhex(t, "47000000 00000000 02000000 04000000 00 00 0000 00000000 01000000 04030201 aabbccdd"))
}

// A GRSSH reply of an RSS NIC, laid out by hand from the uapi (no such NIC here): an 8-entry
// table over queues 0-3, the Microsoft 40-byte key, toeplitz (bit 0), symmetric-or-xor on
// (RXH_XFRM_SYM_OR_XOR, 2: not 1, so that hfunc and input_xfrm cannot pass for each other).
const rxfhReply = `46000000 00000000 08000000 28000000 01 02 0000 00000000
	00000000 01000000 02000000 03000000 00000000 01000000 02000000 03000000
	6d5a56da255b0ec2 4167253d43a38fb0 d0ca2bcbae7b30b4 77cb2da38030f20c 6a42b73bbeac01fa`

func TestRxfhDecode(t *testing.T) {
	b := unhex(t, rxfhReply)
	r, indir, key, err := decodeRxfh(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.cmd != 0x46 || r.indirSize != 8 || r.keySize != 40 || r.hfunc != 1 || r.inputXfrm != 2 {
		t.Errorf("header %+v", r)
	}
	if want := []uint32{0, 1, 2, 3, 0, 1, 2, 3}; len(indir) != len(want) {
		t.Errorf("indir %v, want %v", indir, want)
	} else {
		for i := range want {
			if indir[i] != want[i] {
				t.Errorf("indir %v, want %v", indir, want)
				break
			}
		}
	}
	sameBytes(t, "key", key, pipelines.MicrosoftKey[:])

	// The round trip: the encoder lays out what the decoder read.
	sameBytes(t, "re-encoded", r.encode(indir, key), b)

	// Replies that do not hold what their sizes say are errors, not short reads.
	for _, bad := range [][]byte{b[:23], b[:len(b)-1], b[:24+4*8]} {
		if _, _, _, err := decodeRxfh(bad); err == nil {
			t.Errorf("decodeRxfh of %d bytes: no error", len(bad))
		}
	}
	huge := append([]byte(nil), b...)
	ne.PutUint32(huge[8:], maxIndir+1)
	if _, _, _, err := decodeRxfh(huge); err == nil {
		t.Error("decodeRxfh with indir_size past the bound: no error")
	}
}

// struct ethtool_rxnfc is 192 bytes on LP64: cmd @0, flow_type @4, data (u64) @8, fs @16
// (168 bytes), rule_cnt/rss_context @184, rule_locs[] @188. ETHTOOL_GRXFH returns the hashed
// fields in data; ETHTOOL_GRXRINGS the ring count.
func TestRxnfcLayout(t *testing.T) {
	req := rxnfc(0x29, udpV4Flow)
	if len(req) != 192 {
		t.Fatalf("rxnfc is %d bytes, want 192", len(req))
	}
	sameBytes(t, "GRXFH udp4 head", req[:16], unhex(t, "29000000 02000000 0000000000000000"))
	sameBytes(t, "GRXFH udp4 tail", req[16:], make([]byte, 176))

	for _, c := range []struct {
		reply  string
		fields FlowFields
		ports  bool
		sym    bool
		name   string
	}{
		// RXH_IP_SRC|RXH_IP_DST: the default of many NICs for UDP.
		{"29000000 02000000 3000000000000000", FieldIPSrc | FieldIPDst, false, true, "ip-src+ip-dst"},
		// ...|RXH_L4_B_0_1|RXH_L4_B_2_3: ethtool's "sdfn".
		{"29000000 01000000 f000000000000000", FieldIPSrc | FieldIPDst | FieldL4B01 | FieldL4B23, true, true, "ip-src+ip-dst+sport+dport"},
		// Only the source port: asymmetric.
		{"29000000 02000000 7000000000000000", FieldIPSrc | FieldIPDst | FieldL4B01, false, false, "ip-src+ip-dst+sport"},
		// RXH_DISCARD sits in bit 31 of the u64.
		{"29000000 02000000 0000008000000000", FieldDiscard, false, true, "discard"},
	} {
		b := append(unhex(t, c.reply), make([]byte, 176)...)
		f := FlowFields(rxnfcData(b))
		if f != c.fields || f.Ports() != c.ports || f.Symmetric() != c.sym || f.String() != c.name {
			t.Errorf("%s: fields %#x %q ports %v symmetric %v, want %#x %q %v %v",
				c.reply, uint64(f), f, f.Ports(), f.Symmetric(), uint64(c.fields), c.name, c.ports, c.sym)
		}
	}
	ring := append(unhex(t, "2d000000 00000000 0800000000000000"), make([]byte, 176)...)
	if n := rxnfcData(ring); n != 8 {
		t.Errorf("GRXRINGS data %d, want 8", n)
	}
}

// Replies captured from Linux 6.18 on a veth made with numrxqueues 2 numtxqueues 3.
func TestCapturedReplies(t *testing.T) {
	// ETHTOOL_GCHANNELS: struct ethtool_channels { cmd, max_rx, max_tx, max_other,
	// max_combined, rx_count, tx_count, other_count, combined_count } (u32 each).
	ch := decodeChannels(unhex(t, "3c000000 02000000 03000000 00000000 00000000 02000000 03000000 00000000 00000000"))
	if want := (Channels{MaxRX: 2, MaxTX: 3, RX: 2, TX: 3}); ch != want || ch.RxQueues() != 2 {
		t.Errorf("channels %+v (rx queues %d), want %+v", ch, ch.RxQueues(), want)
	}

	// ETHTOOL_GDRVINFO: cmd, driver[32] @4, version[32], fw_version[32], bus_info[32],
	// erom_version[32], reserved2[12], then n_priv_flags, n_stats (21 for veth), testinfo_len,
	// eedump_len, regdump_len.
	drv := unhex(t, `
		03000000
		7665746800000000000000000000000000000000000000000000000000000000
		312e30002e34342d66632d763133303000000000000000000000000000000000
		0000000000000000000000000000000000000000000000000000000000000000
		0000000000000000000000000000000000000000000000000000000000000000
		0000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000
		00000000
		15000000
		00000000
		00000000
		00000000`)
	if len(drv) != drvinfoLen {
		t.Fatalf("drvinfo capture is %d bytes, want %d", len(drv), drvinfoLen)
	}
	if d := decodeDriver(drv); d != "veth" {
		t.Errorf("driver %q, want veth", d)
	}

	// ETHTOOL_GSTRINGS for ETH_SS_RSS_HASH_FUNCS (5): cmd, string_set, len, then 32-byte names.
	gs := unhex(t, `1b000000 05000000 03000000
		746f65706c69747a000000000000000000000000000000000000000000000000
		786f720000000000000000000000000000000000000000000000000000000000
		6372633332000000000000000000000000000000000000000000000000000000`)
	names := decodeStrings(gs, 3)
	if strings.Join(names, ",") != "toeplitz,xor,crc32" {
		t.Errorf("hash function names %q", names)
	}
	for _, c := range []struct {
		hfunc uint8
		want  string
	}{{0, ""}, {1, "toeplitz"}, {2, "xor"}, {4, "crc32"}, {8, "hfunc-bit3"}} {
		if got := hashFuncName(c.hfunc, names); got != c.want {
			t.Errorf("hashFuncName(%#x) = %q, want %q", c.hfunc, got, c.want)
		}
		if got := hashFuncName(c.hfunc, nil); got != c.want {
			t.Errorf("hashFuncName(%#x) without the kernel's names = %q, want %q", c.hfunc, got, c.want)
		}
	}
}
