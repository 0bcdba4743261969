package ethtool

// RSS (receive-side scaling): what the device hashes, with which function and key, and which
// queue each hash lands on. Read and set through the same SIOCETHTOOL ioctl as the offloads:
//
//   - ETHTOOL_GRSSH / ETHTOOL_SRSSH (struct ethtool_rxfh): hash function, input transform,
//     key and indirection table;
//   - ETHTOOL_GRXFH (struct ethtool_rxnfc): the header fields hashed for one flow type;
//   - ETHTOOL_GRXRINGS (struct ethtool_rxnfc): the rx rings the table may point at;
//   - ETHTOOL_GCHANNELS (struct ethtool_channels) and ETHTOOL_GDRVINFO (struct
//     ethtool_drvinfo) for the queue counts and the driver's name;
//   - the ETH_SS_RSS_HASH_FUNCS string set for the hash functions' names.
//
// Why not ethtool netlink (ETHTOOL_MSG_RSS_GET): the kernel has it, but the Go library for it
// (github.com/mdlayher/ethtool, v0.7.0) does not cover RSS, and the ioctl gives the same
// answers, input transform included (since Linux 6.8), through the plumbing this package has.
//
// A device without RSS: the kernel answers ETHTOOL_GRSSH with EOPNOTSUPP when the driver has
// no get_rxfh (veth, ifb, lo), and some drivers that have one do the same when the device lacks
// the feature (virtio_net without VIRTIO_NET_F_RSS, as on the machine this was written on).
// RSS then returns a config with Supported false and the reason, and no error.
//
// What was verified where: the development machine (Linux 6.18, a Firecracker VM) has no
// device with RSS: veth and its virtio_net report none. The no-RSS path runs against veth in
// the tests; the decoding of a real device's reply and the encoding of the set requests are
// tested against byte layouts built from the kernel's uapi (include/uapi/linux/ethtool.h),
// not against a capture from an RSS NIC.

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/pipelines"
)

// Sizes and special values of the uapi structs (include/uapi/linux/ethtool.h).
const (
	rxfhHeaderLen = 24  // sizeof(struct ethtool_rxfh): cmd, rss_context, indir_size, key_size, hfunc, input_xfrm, rsvd8[2], rsvd32
	rxnfcLen      = 192 // sizeof(struct ethtool_rxnfc) on LP64; at least as large elsewhere
	channelsLen   = 36  // sizeof(struct ethtool_channels)
	drvinfoLen    = 196 // sizeof(struct ethtool_drvinfo)

	rxfhIndirNoChange = 0xffffffff // ETH_RXFH_INDIR_NO_CHANGE
	rxhXfrmNoChange   = 0xff       // RXH_XFRM_NO_CHANGE
	hashTop           = 1 << 0     // ETH_RSS_HASH_TOP (include/linux/ethtool.h: bit 0, "toeplitz")

	tcpV4Flow = 0x01 // TCP_V4_FLOW
	udpV4Flow = 0x02 // UDP_V4_FLOW

	maxIndir     = 1 << 16 // bounds on what a reply may ask us to allocate
	maxKey       = 1024
	maxHashFuncs = 32
)

// InputXfrm is the RXH_XFRM_* transform the device applies to the hash input.
type InputXfrm uint8

const (
	// XfrmSymXor: the device XORs source and destination fields (addresses, ports) before
	// hashing, so both directions of a flow hash alike (RXH_XFRM_SYM_XOR).
	XfrmSymXor InputXfrm = 1 << 0
	// XfrmSymOrXor: as XfrmSymXor, with one copy of the XORed fields replaced by their OR
	// (RXH_XFRM_SYM_OR_XOR).
	XfrmSymOrXor InputXfrm = 1 << 1
)

func (x InputXfrm) String() string {
	switch x {
	case 0:
		return "none"
	case XfrmSymXor:
		return "symmetric-xor"
	case XfrmSymOrXor:
		return "symmetric-or-xor"
	}
	return fmt.Sprintf("input_xfrm %#x", uint8(x))
}

// FlowFields is the ETHTOOL_GRXFH bitmask of the header fields a flow type's hash covers
// (RXH_*).
type FlowFields uint64

const (
	FieldL2DA    FlowFields = 1 << 1  // RXH_L2DA: destination MAC
	FieldVLAN    FlowFields = 1 << 2  // RXH_VLAN
	FieldL3Proto FlowFields = 1 << 3  // RXH_L3_PROTO
	FieldIPSrc   FlowFields = 1 << 4  // RXH_IP_SRC
	FieldIPDst   FlowFields = 1 << 5  // RXH_IP_DST
	FieldL4B01   FlowFields = 1 << 6  // RXH_L4_B_0_1: the source port for TCP, UDP, SCTP
	FieldL4B23   FlowFields = 1 << 7  // RXH_L4_B_2_3: the destination port
	FieldGTPTEID FlowFields = 1 << 8  // RXH_GTP_TEID
	FieldDiscard FlowFields = 1 << 31 // RXH_DISCARD: the flow type's packets are dropped
)

var fieldNames = []struct {
	f    FlowFields
	name string
}{
	{FieldL2DA, "l2da"}, {FieldVLAN, "vlan"}, {FieldL3Proto, "l3-proto"},
	{FieldIPSrc, "ip-src"}, {FieldIPDst, "ip-dst"}, {FieldL4B01, "sport"}, {FieldL4B23, "dport"},
	{FieldGTPTEID, "gtp-teid"}, {FieldDiscard, "discard"},
}

// String names the fields, "+"-joined: "ip-src+ip-dst+sport+dport"; "none" for no field.
func (f FlowFields) String() string {
	var parts []string
	rest := f
	for _, n := range fieldNames {
		if f&n.f != 0 {
			parts = append(parts, n.name)
			rest &^= n.f
		}
	}
	if rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint64(rest)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "+")
}

// Ports says whether both ports are hashed.
func (f FlowFields) Ports() bool { return f&(FieldL4B01|FieldL4B23) == FieldL4B01|FieldL4B23 }

// Addresses says whether both IP addresses are hashed.
func (f FlowFields) Addresses() bool { return f&(FieldIPSrc|FieldIPDst) == FieldIPSrc|FieldIPDst }

// Symmetric says whether the fields come in pairs (source address with destination address,
// source port with destination port), which any symmetric hash needs: with a source field
// hashed and not its destination, the two directions of a flow hash different inputs.
func (f FlowFields) Symmetric() bool {
	return (f&FieldIPSrc != 0) == (f&FieldIPDst != 0) && (f&FieldL4B01 != 0) == (f&FieldL4B23 != 0)
}

// FlowHash is what the device hashes for one flow type.
type FlowHash struct {
	Fields FlowFields
	Known  bool  // the driver answered ETHTOOL_GRXFH
	Err    error // why not, when !Known
}

// Channels is struct ethtool_channels: the device's queue counts (ETHTOOL_GCHANNELS). veth
// reports its queues as RX and TX, most NICs as Combined. Zero when the driver does not say.
type Channels struct {
	MaxRX, MaxTX, MaxOther, MaxCombined uint32
	RX, TX, Other, Combined             uint32
}

// RxQueues is the number of queues that receive: rx-only channels plus combined ones.
func (c Channels) RxQueues() int { return int(c.RX + c.Combined) }

// RSSConfig is a device's RSS configuration as RSS reads it.
type RSSConfig struct {
	Iface  string
	Driver string // ETHTOOL_GDRVINFO: "veth", "mlx5_core"; "" when the device has none (lo)

	// Supported is false when the device has no RSS; Reason then says why (it wraps the
	// kernel's errno, EOPNOTSUPP for veth) and the fields below are zero, but Channels.
	Supported bool
	Reason    error

	HashFunc  string    // "toeplitz", "xor", "crc32" (the kernel's names); "" when the driver does not say
	HashBits  uint8     // hfunc as the kernel gave it: one ETH_RSS_HASH_* bit
	InputXfrm InputXfrm // 0, or XfrmSymXor where the driver has it and it is on
	Key       []byte    // the hash key (often 40 bytes, 52 on some NICs); nil when the device has none
	Indir     []uint32  // the indirection table: entry i is the rx queue of hashes with hash%len == i
	RxRings   int       // ETHTOOL_GRXRINGS: the rx rings the table may point at; 0 when not reported

	TCP4, UDP4 FlowHash // the fields hashed for TCP/IPv4 and UDP/IPv4 (ETHTOOL_GRXFH)

	Channels Channels // ETHTOOL_GCHANNELS, read with or without RSS
}

// ErrNoRSS is matched (errors.Is) by the error of a device without RSS: a *NoRSSError.
var ErrNoRSS = errors.New("ethtool: the device has no RSS")

// NoRSSError says that a device has no RSS and why.
type NoRSSError struct {
	Iface, Driver string
	Err           error // the kernel's answer: wraps EOPNOTSUPP for veth
}

func (e *NoRSSError) Error() string {
	who := e.Driver
	if who == "" {
		who = e.Iface
	}
	return fmt.Sprintf("ethtool: %s has no RSS: %s: %v", who, e.Iface, e.Err)
}

// Is makes errors.Is(err, ErrNoRSS) true.
func (e *NoRSSError) Is(target error) bool { return target == ErrNoRSS }

func (e *NoRSSError) Unwrap() error { return e.Err }

// Err is nil for a device with RSS and a *NoRSSError (matching ErrNoRSS) for one without.
func (c RSSConfig) Err() error {
	if c.Supported {
		return nil
	}
	why := c.Reason
	if why == nil {
		why = errors.New("no RSS reported")
	}
	return &NoRSSError{Iface: c.Iface, Driver: c.Driver, Err: why}
}

// Queues returns the distinct rx queues the indirection table points at, in table order.
func (c RSSConfig) Queues() []uint32 {
	var qs []uint32
	seen := map[uint32]bool{}
	for _, q := range c.Indir {
		if !seen[q] {
			seen[q] = true
			qs = append(qs, q)
		}
	}
	return qs
}

// TCPPortsHashed says whether the device hashes both TCP/IPv4 ports (false also when it does not
// say: see c.TCP4.Known).
func (c RSSConfig) TCPPortsHashed() bool { return c.TCP4.Known && c.TCP4.Fields.Ports() }

// UDPPortsHashed says whether the device hashes both UDP/IPv4 ports (false also when it does not
// say: see c.UDP4.Known). Many NICs hash UDP on addresses only by default; then every UDP flow
// between two hosts lands on one queue, and picking source ports cannot steer replies.
func (c RSSConfig) UDPPortsHashed() bool { return c.UDP4.Known && c.UDP4.Fields.Ports() }

// SymmetricKey says whether the key repeats every 16 bits, which makes a Toeplitz hash over
// paired fields symmetric (pipelines.SymmetricKey is one).
func (c RSSConfig) SymmetricKey() bool { return keyIs16BitPeriodic(c.Key) }

// Symmetric says whether both directions of a TCP/IPv4 or UDP/IPv4 flow land on one queue: the
// symmetric-xor transform is on, or the hash is Toeplitz with a 16-bit periodic key; and the
// hashed fields (where the driver says) come in pairs.
func (c RSSConfig) Symmetric() bool {
	if !c.Supported {
		return false
	}
	sym := c.InputXfrm&(XfrmSymXor|XfrmSymOrXor) != 0 || (c.HashFunc == "toeplitz" && c.SymmetricKey())
	for _, h := range []FlowHash{c.TCP4, c.UDP4} {
		if h.Known && !h.Fields.Symmetric() {
			sym = false
		}
	}
	return sym
}

// Describe is a one-line summary for doctor and status:
//
//	toeplitz, key 40 bytes, 128-entry table over 4 queues, UDP ports hashed
//	no RSS (veth): the owner function is the software hash
func Describe(c RSSConfig) string {
	if !c.Supported {
		who := c.Driver
		if who == "" {
			who = c.Iface
		}
		if who == "" {
			return "no RSS: the owner function is the software hash"
		}
		return fmt.Sprintf("no RSS (%s): the owner function is the software hash", who)
	}
	var b strings.Builder
	if c.HashFunc != "" {
		b.WriteString(c.HashFunc)
	} else {
		b.WriteString("hash function not reported")
	}
	if c.InputXfrm != 0 {
		fmt.Fprintf(&b, " with %v", c.InputXfrm)
	}
	if len(c.Key) > 0 {
		fmt.Fprintf(&b, ", key %d bytes", len(c.Key))
		if c.SymmetricKey() {
			b.WriteString(" (symmetric)")
		}
	} else {
		b.WriteString(", no key")
	}
	qs := len(c.Queues())
	if c.RxRings > qs {
		fmt.Fprintf(&b, ", %d-entry table over %d of %d queues", len(c.Indir), qs, c.RxRings)
	} else {
		fmt.Fprintf(&b, ", %d-entry table over %d %s", len(c.Indir), qs, plural(qs, "queue", "queues"))
	}
	if c.TCP4.Known && !c.TCP4.Fields.Ports() {
		fmt.Fprintf(&b, ", TCP ports not hashed (%v)", c.TCP4.Fields)
	}
	switch {
	case !c.UDP4.Known:
		b.WriteString(", UDP hash fields not reported")
	case c.UDP4.Fields.Ports():
		b.WriteString(", UDP ports hashed")
	default:
		fmt.Fprintf(&b, ", UDP ports not hashed (%v)", c.UDP4.Fields)
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// RSS reads iface's RSS configuration (iface in the calling process's network namespace). A
// device without RSS is not an error: the config says Supported false and why, and c.Err()
// turns that into a *NoRSSError. The error is for failures: no such device (ENODEV), a reply
// that does not parse.
func RSS(iface string) (RSSConfig, error) {
	s, err := open()
	if err != nil {
		return RSSConfig{Iface: iface}, err
	}
	defer s.close()
	return s.rss(iface)
}

func (s sock) rss(iface string) (RSSConfig, error) {
	c := RSSConfig{Iface: iface}
	drv, err := s.driver(iface)
	switch {
	case err == nil:
		c.Driver = drv
	case errors.Is(err, unix.EOPNOTSUPP):
		// lo has no driver info; go on.
	default:
		return c, fmt.Errorf("ethtool: %s: %w", iface, err)
	}
	if ch, err := s.channels(iface); err == nil {
		c.Channels = ch
	}
	hdr, indir, key, err := s.getRxfh(iface)
	if errors.Is(err, unix.EOPNOTSUPP) {
		c.Reason = err
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("ethtool: RSS of %s: %w", iface, err)
	}
	if len(indir) == 0 {
		// virtio_net without the RSS feature answers so.
		c.Reason = fmt.Errorf("ETHTOOL_GRSSH: indir_size 0, key_size %d: no indirection table to spread over: %w",
			hdr.keySize, unix.EOPNOTSUPP)
		return c, nil
	}
	c.Supported = true
	c.Indir, c.Key = indir, key
	c.HashBits, c.InputXfrm = hdr.hfunc, InputXfrm(hdr.inputXfrm)
	names, _ := s.stringSet(iface, ethSSRSSHashFuncs, maxHashFuncs)
	c.HashFunc = hashFuncName(hdr.hfunc, names)
	if n, err := s.rxRings(iface); err == nil {
		c.RxRings = n
	}
	c.TCP4 = s.flowHash(iface, tcpV4Flow)
	c.UDP4 = s.flowHash(iface, udpV4Flow)
	return c, nil
}

// SetSymmetricRSS makes iface hash both directions of a flow alike, so that they land on one
// queue: the symmetric-xor input transform where the driver has it (ETHTOOL_SRSSH with
// input_xfrm RXH_XFRM_SYM_XOR, Linux 6.8 and later), else Toeplitz with pipelines.SymmetricKey
// (repeated to the device's key size). The indirection table is left as it is. It reads the
// result back and fails unless the device took the change. A device without RSS fails with a
// *NoRSSError ("ethtool: veth has no RSS: ..."). Nothing to do when the device is symmetric
// already. Needs CAP_NET_ADMIN.
//
// With symmetric-xor the hash input is the XORed fields, not the fields: a software model of
// the device's hash (to pick source ports) must apply the same transform.
func SetSymmetricRSS(iface string) error {
	s, err := open()
	if err != nil {
		return err
	}
	defer s.close()
	c, err := s.rss(iface)
	if err != nil {
		return err
	}
	if !c.Supported {
		return c.Err()
	}
	for _, f := range []struct {
		name string
		h    FlowHash
	}{{"TCP/IPv4", c.TCP4}, {"UDP/IPv4", c.UDP4}} {
		if f.h.Known && !f.h.Fields.Symmetric() {
			return fmt.Errorf("ethtool: %s hashes %s on %v: a source field without its destination (or the reverse) is never symmetric; change the fields first (ethtool -N %s rx-flow-hash)",
				iface, f.name, f.h.Fields, iface)
		}
	}
	if c.Symmetric() {
		return nil
	}

	// The symmetric-xor transform.
	xerr := s.ioctl(iface, rxfh{cmd: unix.ETHTOOL_SRSSH, indirSize: rxfhIndirNoChange,
		inputXfrm: uint8(XfrmSymXor)}.encode(nil, nil))
	if xerr == nil {
		after, err := s.rss(iface)
		if err != nil {
			return err
		}
		if after.InputXfrm&XfrmSymXor != 0 {
			return nil
		}
		xerr = fmt.Errorf("the driver took it but reports %v", after.InputXfrm)
	}
	xerr = fmt.Errorf("symmetric-xor: ETHTOOL_SRSSH: %w", xerr)

	// A symmetric Toeplitz key.
	if len(c.Key) == 0 {
		return fmt.Errorf("ethtool: no symmetric RSS on %s: %v; and the device has no hash key to set", iface, xerr)
	}
	key := symmetricKey(len(c.Key))
	req := rxfh{cmd: unix.ETHTOOL_SRSSH, indirSize: rxfhIndirNoChange, keySize: uint32(len(key)),
		inputXfrm: rxhXfrmNoChange}
	if c.HashFunc != "toeplitz" {
		req.hfunc = hashTop
	}
	err = s.ioctl(iface, req.encode(nil, key))
	if errors.Is(err, unix.EINVAL) {
		// Before Linux 6.8 input_xfrm was reserved and had to be 0.
		req.inputXfrm = 0
		err = s.ioctl(iface, req.encode(nil, key))
	}
	if err != nil {
		return fmt.Errorf("ethtool: no symmetric RSS on %s: %v; symmetric Toeplitz key: ETHTOOL_SRSSH: %w", iface, xerr, err)
	}
	after, err := s.rss(iface)
	if err != nil {
		return err
	}
	if !after.Symmetric() {
		return fmt.Errorf("ethtool: no symmetric RSS on %s: %v; the symmetric Toeplitz key was taken but the device reports: %s",
			iface, xerr, Describe(after))
	}
	return nil
}

// symmetricKey returns pipelines.SymmetricKey repeated to n bytes: still 16-bit periodic, so
// still symmetric, for devices whose key is not 40 bytes.
func symmetricKey(n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = pipelines.SymmetricKey[i%len(pipelines.SymmetricKey)]
	}
	return k
}

func keyIs16BitPeriodic(k []byte) bool {
	if len(k) < 4 {
		return false
	}
	for i := 2; i < len(k); i++ {
		if k[i] != k[i-2] {
			return false
		}
	}
	return true
}

// fallbackHashFuncs are the kernel's names (rss_hash_func_strings) by bit, for when the string
// set cannot be read.
var fallbackHashFuncs = []string{"toeplitz", "xor", "crc32"}

// hashFuncName names hfunc (ETH_RSS_HASH_* bits) by the kernel's string set: bit i is names[i].
func hashFuncName(hfunc uint8, names []string) string {
	var parts []string
	for i := 0; i < 8; i++ {
		if hfunc&(1<<i) == 0 {
			continue
		}
		switch {
		case i < len(names) && names[i] != "":
			parts = append(parts, names[i])
		case i < len(fallbackHashFuncs):
			parts = append(parts, fallbackHashFuncs[i])
		default:
			parts = append(parts, fmt.Sprintf("hfunc-bit%d", i))
		}
	}
	return strings.Join(parts, "+")
}

// rxfh is the fixed part of struct ethtool_rxfh.
type rxfh struct {
	cmd, rssContext, indirSize, keySize uint32
	hfunc, inputXfrm                    uint8
}

// encode lays out r followed by rss_config: indir (indirSize entries) then key (keySize
// bytes). For a get, indir and key are nil and the buffer gets room for what the sizes ask.
func (r rxfh) encode(indir []uint32, key []byte) []byte {
	n := rxfhHeaderLen + len(key)
	indirBytes := 0
	if r.indirSize != rxfhIndirNoChange {
		indirBytes = 4 * int(r.indirSize)
		n += indirBytes
	}
	if key == nil && r.keySize != 0 {
		n += int(r.keySize)
	}
	b := make([]byte, n)
	ne.PutUint32(b[0:], r.cmd)
	ne.PutUint32(b[4:], r.rssContext)
	ne.PutUint32(b[8:], r.indirSize)
	ne.PutUint32(b[12:], r.keySize)
	b[16] = r.hfunc
	b[17] = r.inputXfrm
	// b[18:20] rsvd8, b[20:24] rsvd32: zero, as the kernel requires
	for i, q := range indir {
		ne.PutUint32(b[rxfhHeaderLen+4*i:], q)
	}
	copy(b[rxfhHeaderLen+indirBytes:], key)
	return b
}

// decodeRxfh reads an ETHTOOL_GRSSH reply: the header, then indir_size entries, then key_size
// bytes of key.
func decodeRxfh(b []byte) (rxfh, []uint32, []byte, error) {
	if len(b) < rxfhHeaderLen {
		return rxfh{}, nil, nil, fmt.Errorf("ethtool_rxfh: %d bytes, want at least %d", len(b), rxfhHeaderLen)
	}
	r := rxfh{cmd: ne.Uint32(b[0:]), rssContext: ne.Uint32(b[4:]), indirSize: ne.Uint32(b[8:]),
		keySize: ne.Uint32(b[12:]), hfunc: b[16], inputXfrm: b[17]}
	if r.indirSize > maxIndir || r.keySize > maxKey {
		return r, nil, nil, fmt.Errorf("ethtool_rxfh: indir_size %d, key_size %d: too large", r.indirSize, r.keySize)
	}
	need := rxfhHeaderLen + 4*int(r.indirSize) + int(r.keySize)
	if len(b) < need {
		return r, nil, nil, fmt.Errorf("ethtool_rxfh: %d bytes for indir_size %d and key_size %d, want %d", len(b), r.indirSize, r.keySize, need)
	}
	var indir []uint32
	if r.indirSize > 0 {
		indir = make([]uint32, r.indirSize)
		for i := range indir {
			indir[i] = ne.Uint32(b[rxfhHeaderLen+4*i:])
		}
	}
	var key []byte
	if r.keySize > 0 {
		off := rxfhHeaderLen + 4*int(r.indirSize)
		key = append([]byte(nil), b[off:off+int(r.keySize)]...)
	}
	return r, indir, key, nil
}

// getRxfh: ETHTOOL_GRSSH twice, once for the sizes and once for the table and key (the kernel
// wants them exact). A size that changes in between gives EINVAL: tried again once.
func (s sock) getRxfh(iface string) (rxfh, []uint32, []byte, error) {
	var err error
	for try := 0; try < 2; try++ {
		b := rxfh{cmd: unix.ETHTOOL_GRSSH}.encode(nil, nil)
		if err = s.ioctl(iface, b); err != nil {
			return rxfh{}, nil, nil, fmt.Errorf("ETHTOOL_GRSSH: %w", err)
		}
		sizes, _, _, derr := decodeRxfh(b)
		if derr != nil {
			return rxfh{}, nil, nil, derr
		}
		if sizes.indirSize == 0 && sizes.keySize == 0 {
			return sizes, nil, nil, nil
		}
		b = rxfh{cmd: unix.ETHTOOL_GRSSH, indirSize: sizes.indirSize, keySize: sizes.keySize}.encode(nil, nil)
		if err = s.ioctl(iface, b); errors.Is(err, unix.EINVAL) {
			continue
		}
		if err != nil {
			return rxfh{}, nil, nil, fmt.Errorf("ETHTOOL_GRSSH: %w", err)
		}
		return decodeRxfh(b)
	}
	return rxfh{}, nil, nil, fmt.Errorf("ETHTOOL_GRSSH: the sizes kept changing: %w", err)
}

// rxnfc encodes struct ethtool_rxnfc with cmd and flow_type; the rest zero.
func rxnfc(cmd, flowType uint32) []byte {
	b := make([]byte, rxnfcLen)
	ne.PutUint32(b[0:], cmd)
	ne.PutUint32(b[4:], flowType)
	return b
}

// rxnfcData reads the data field (offset 8, u64) of an ethtool_rxnfc reply.
func rxnfcData(b []byte) uint64 { return ne.Uint64(b[8:]) }

func (s sock) flowHash(iface string, flowType uint32) FlowHash {
	b := rxnfc(unix.ETHTOOL_GRXFH, flowType)
	if err := s.ioctl(iface, b); err != nil {
		return FlowHash{Err: fmt.Errorf("ETHTOOL_GRXFH: %w", err)}
	}
	return FlowHash{Fields: FlowFields(rxnfcData(b)), Known: true}
}

func (s sock) rxRings(iface string) (int, error) {
	b := rxnfc(unix.ETHTOOL_GRXRINGS, 0)
	if err := s.ioctl(iface, b); err != nil {
		return 0, fmt.Errorf("ETHTOOL_GRXRINGS: %w", err)
	}
	return int(rxnfcData(b)), nil
}

func decodeChannels(b []byte) Channels {
	u := func(off int) uint32 { return ne.Uint32(b[off:]) }
	return Channels{MaxRX: u(4), MaxTX: u(8), MaxOther: u(12), MaxCombined: u(16),
		RX: u(20), TX: u(24), Other: u(28), Combined: u(32)}
}

func (s sock) channels(iface string) (Channels, error) {
	b := make([]byte, channelsLen)
	ne.PutUint32(b, unix.ETHTOOL_GCHANNELS)
	if err := s.ioctl(iface, b); err != nil {
		return Channels{}, fmt.Errorf("ETHTOOL_GCHANNELS: %w", err)
	}
	return decodeChannels(b), nil
}

// decodeDriver reads the driver name (char driver[32] at offset 4) of an ethtool_drvinfo.
func decodeDriver(b []byte) string {
	d := b[4:36]
	for i, c := range d {
		if c == 0 {
			return string(d[:i])
		}
	}
	return string(d)
}

func (s sock) driver(iface string) (string, error) {
	b := make([]byte, drvinfoLen)
	ne.PutUint32(b, unix.ETHTOOL_GDRVINFO)
	if err := s.ioctl(iface, b); err != nil {
		return "", fmt.Errorf("ETHTOOL_GDRVINFO: %w", err)
	}
	return decodeDriver(b), nil
}
