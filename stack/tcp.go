package stack

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// Drop reasons of TCP.
var (
	ReasonTCPNoConn     = pipelines.RegisterReason("tcp-no-connection") // answered with RST
	ReasonTCPBadOptions = pipelines.RegisterReason("tcp-bad-options")
	ReasonTCPBacklog    = pipelines.RegisterReason("tcp-backlog-full")
	ReasonTCPConnLimit  = pipelines.RegisterReason("tcp-connection-limit")
	ReasonTCPOOOLimit   = pipelines.RegisterReason("tcp-ooo-limit")
)

// TCPConfig tunes TCP; the zero value gives the defaults.
type TCPConfig struct {
	// RecvBuffer and SendBuffer are each connection's buffer sizes in bytes, rounded up to a
	// power of two (default 256 KiB each). The receive buffer is the largest window we offer.
	RecvBuffer, SendBuffer int
	// MinRTO is the lower bound of the retransmission timeout (default 200 ms; RFC 6298 says
	// 1 s, Linux uses 200 ms). InitialRTO defaults to 1 s. MaxRTO (default 60 s, at least
	// MinRTO) bounds the timeout and its exponential backoff, and the persist timer's.
	MinRTO, InitialRTO, MaxRTO time.Duration
	// DelayedACK is the longest an ACK waits for a second segment or data to ride on (default 40 ms).
	DelayedACK time.Duration
	// TLPMaxAckDelay is what a tail loss probe of a lone segment allows for the peer's delayed
	// ACK (RFC 8985 §7.2's TLP.max_ack_delay, a MAY; default 200 ms, Linux's and gVisor's).
	// It is added only while the peer is seen delaying its ACKs of lone segments: more than
	// one in eight of them acked after the uninflated probe time, or probed and reported as
	// a duplicate (D-SACK, RFC 2883) while the peer had sent us nothing new. Otherwise a lost
	// lone segment (a request, a response) is probed after two SRTTs (at least 2 ms) instead
	// of waiting for the RTO. TLPAlwaysInflate adds it always, as Linux and gVisor do.
	TLPMaxAckDelay   time.Duration
	TLPAlwaysInflate bool
	// TimeWait is how long a connection stays in TIME_WAIT (default 60 s, 2 MSL), and
	// MaxTimeWait bounds how many each shard keeps (default 4096; the oldest goes first).
	TimeWait    time.Duration
	MaxTimeWait int
	// FinTimeout ends a connection its user closed that waits in FIN_WAIT_2 (default 60 s).
	FinTimeout time.Duration
	// MaxConns bounds each shard's connections, TIME_WAIT included (default 16384).
	MaxConns int
	// Backlog is the default limit of a listener's connections not yet accepted, half-open
	// ones included (default 128). A SYN that finds it full takes the place of the oldest
	// half-open connection on its shard if that one's SYN-ACK has gone unanswered for a
	// retransmission timeout (Stats.TCP.HalfOpenEvicted); otherwise it is dropped (reason
	// tcp-backlog-full, Stats.TCP.BacklogDrops) and the client sends it again.
	Backlog int
	// OOORanges bounds the out-of-order ranges each connection keeps (default 16).
	OOORanges int
	// SynRetries and Retries bound retransmissions of a SYN and of data (default 6 and 15).
	SynRetries, Retries int
	// ChallengeACKsPerSecond limits RFC 5961 challenge ACKs per shard (default 1000).
	ChallengeACKsPerSecond int
	// KeepAlive turns keepalive on for every connection, with this idle time before the first
	// probe (0: off, as in Linux; TCPConn.SetKeepAlive and SetKeepAliveConfig turn it on for
	// one connection, idling 15 s unless told otherwise). KeepAliveInterval separates
	// unanswered probes (default 15 s), and after KeepAliveCount of them (default 9) the
	// connection is reset and its user sees ETIMEDOUT. The defaults are Go's (net.KeepAliveConfig).
	KeepAlive, KeepAliveInterval time.Duration
	KeepAliveCount               int
	// NoTimestamps, NoSACK and NoWindowScale turn those options off (for tests and labs).
	NoTimestamps, NoSACK, NoWindowScale bool
	// CongestionControl is the connections' algorithm unless their listener or dial says
	// otherwise (TCPSocketConfig): NewReno (the default) or CUBIC.
	CongestionControl CongestionControl
}

func (c *TCPConfig) setDefaults() {
	pow2 := func(n, def int) int {
		if n <= 0 {
			n = def
		}
		p := 4096
		for p < n {
			p <<= 1
		}
		return p
	}
	c.RecvBuffer = pow2(c.RecvBuffer, 256<<10)
	c.SendBuffer = pow2(c.SendBuffer, 256<<10)
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.MinRTO, 200*time.Millisecond)
	def(&c.InitialRTO, time.Second)
	def(&c.MaxRTO, 60*time.Second)
	c.MaxRTO = max(c.MaxRTO, c.MinRTO)
	def(&c.DelayedACK, 40*time.Millisecond)
	def(&c.TLPMaxAckDelay, 200*time.Millisecond)
	def(&c.TimeWait, 60*time.Second)
	def(&c.FinTimeout, 60*time.Second)
	def(&c.KeepAliveInterval, defaultKeepAlive)
	defi := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	defi(&c.MaxTimeWait, 4096)
	defi(&c.MaxConns, 16384)
	defi(&c.Backlog, 128)
	defi(&c.OOORanges, 16)
	defi(&c.SynRetries, 6)
	defi(&c.Retries, 15)
	defi(&c.ChallengeACKsPerSecond, 1000)
	defi(&c.KeepAliveCount, 9)
	if c.OOORanges > maxOOO {
		c.OOORanges = maxOOO
	}
	if c.CongestionControl == "" {
		c.CongestionControl = DefaultCongestionControl
	}
}

// tcpState is a connection's RFC 9293 state.
type tcpState uint8

const (
	stClosed tcpState = iota
	stSynSent
	stSynRcvd
	stEstablished
	stFinWait1
	stFinWait2
	stCloseWait
	stClosing
	stLastAck
	stTimeWait
)

var stateNames = [...]string{"CLOSED", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
	"CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"}

func (s tcpState) String() string { return stateNames[s] }

// synchronized states are those after the handshake.
func (s tcpState) synchronized() bool { return s >= stEstablished }

const (
	maxOOO           = 32
	minPeerMSS       = 48               // the least MSS we take from a peer (Linux's tcp_min_snd_mss)
	defaultKeepAlive = 15 * time.Second // idle time and interval when not configured (Go's)
	maxSACKBoard     = 16
	tcpListenerBit   = 1 << 31
	tsHz             = int64(time.Millisecond) // timestamp clock: 1 ms
	pawsWindow       = 1                       // ticks by which PAWS lets a timestamp lag TS.Recent
)

// Sequence-number comparisons (RFC 9293 §3.4), modulo 2^32.
func seqLT(a, b uint32) bool  { return int32(a-b) < 0 }
func seqLEQ(a, b uint32) bool { return int32(a-b) <= 0 }
func seqGT(a, b uint32) bool  { return int32(a-b) > 0 }
func seqGEQ(a, b uint32) bool { return int32(a-b) >= 0 }
func seqMax(a, b uint32) uint32 {
	if seqGT(a, b) {
		return a
	}
	return b
}

type seqRange struct{ start, end uint32 }

// tcb is the shard-only part of a connection: everything here is read and written by the
// owning shard's goroutine and no other, so it takes no locks, and it holds no pointers but
// its congestion control algorithm.
type tcb struct {
	state                    tcpState
	idx                      int32 // slot in the shard's table
	passive                  bool
	iss, irs                 uint32
	sndUna, sndNxt, sndMax   uint32
	sndBase                  uint32 // sequence of the first byte in the send ring
	sndWnd, maxSndWnd        uint32
	sndWl1, sndWl2           uint32
	sndWscale, rcvWscale     uint8
	wsOK, tsOK, sackOK       bool
	mss                      uint32 // payload bytes per segment (options excluded)
	peerMSS                  uint32
	rcvNxt, rcvAdv           uint32
	tsRecent                 uint32
	tsRecentAt               int64
	lastAckSent              uint32
	tsOffset                 uint32
	cc                       ccState // congestion control: cwnd and ssthresh (tcp_cc.go)
	dupAcks                  int
	recover                  uint32
	inRecovery               bool
	rtxNext                  uint32 // SACK recovery: next sequence to consider for retransmission
	rtxNow                   bool   // retransmit the segment at sndUna on the next pass
	rtxMark                  uint32 // sndMax when the latest retransmission went out
	lostLo, lostHi           uint32 // unSACKed bytes here are lost retransmissions to send again
	lostGuard                uint32 // holes below this were already declared lost in this sweep
	sackNew                  bool   // the last ACK SACKed new bytes, sackNewLo to sackNewHi
	sackNewLo, sackNewHi     uint32
	tlpAt                    int64        // tail loss probe timer (RFC 8985 §7)
	tlpNow, tlpOut           bool         // send the probe on the next pass; a probe is out
	tlpHigh                  uint32       // sndMax when the probe went out
	tlpRtxLo, tlpRtxHi       uint32       // what the probe sent again (empty when it sent new data)
	tlpLone                  bool         // the probe went out with one segment in flight
	lateACKs                 uint8        // share of lone segments acked after their probe time, /256 (tcpLoneAcked)
	loneAt, lonePTO          int64        // when the flight became one segment, and its uninflated PTO
	rcvNxtAtSend             uint32       // rcvNxt when new data last went out
	dsackLo, dsackHi         uint32       // a duplicate segment to report in the next ACK (RFC 2883)
	rtoUndo                  bool         // an RTO may yet prove spurious (RFC 3522 detection)
	rtoTS                    uint32       // our TSval when the RTO fired
	rtt                      rttEstimator // RFC 6298 (tcp_rtt.go)
	rttTiming                bool
	rttSeq                   uint32
	rttTime                  int64
	retries                  int
	rtoAt, delackAt          int64
	persistAt, twAt, kaAt    int64
	finAt                    int64
	ackNow                   bool
	segsUnacked              int
	dupAcksOwed              int // immediate duplicate ACKs for out-of-order segments
	swsOverride              bool
	finSent                  bool
	finSeq                   uint32
	finRcvd                  bool
	oooFin                   bool
	oooFinSeq                uint32
	ooo                      [maxOOO]seqRange
	nooo                     int
	lastOOO                  int // index in ooo of the most recently changed range (first SACK block)
	sacked                   [maxSACKBoard]seqRange
	nsacked                  int
	queued                   bool // in the shard's active list
	appQueued                bool // in the shard's list of connections whose app has news
	ackInPlace               bool // the segment being processed is to become our ACK (tcpAckInPlace)
	challengeAck             bool
	lastRecv                 int64
	kaProbes                 int // unanswered keepalive probes
	established              bool
	retransmits, sackedBytes uint64
}

// tcpShard is a Stack's TCP state.
type tcpShard struct {
	conns    []*TCPConn
	free     []int32
	active   []*TCPConn
	next     int64 // earliest timer of any connection (0: none)
	tw       []*TCPConn
	synq     []*TCPConn // half-open passive connections, oldest first (tcpQueueHalfOpen)
	nconns   int
	opts     header.TCPOptions
	txOpts   header.TCPOptions
	chTokens float64
	chLast   int64

	ctlMu  sync.Mutex
	ctl    []tcpCtl
	ctlAny atomic.Bool

	pokeMu    sync.Mutex
	pokeQ     []*TCPConn
	pokeSpare []*TCPConn // the shard's: pokeQ's other buffer (tcpPokes)
	pokeAny   atomic.Bool
	pokeBuf   []*TCPConn

	orphans []orphanRST // RSTs to send for connections that may be gone by then

	apps     []shardApp // this shard's app per ListenTCPApp listener
	ready    []*TCPConn // connections whose app has news
	readyBuf []*TCPConn
}

type orphanRST struct {
	la, ra netip.AddrPort
	seq    uint32
	ifc    int
	nh     [4]byte
}

type tcpCtl struct {
	listen   *TCPListener
	unlisten bool
	dial     *TCPConn
	done     *sync.WaitGroup
}

// tcpHost is the Host's TCP state: listeners, live connections, counters, the ISN secret.
type tcpHost struct {
	cfg    TCPConfig
	secret [32]byte

	mu        sync.Mutex
	listeners map[uint32]*TCPListener
	ports     map[uint16]int // listening ports (any address counts once per listener)
	nextID    uint32
	conns     map[*TCPConn]struct{}
	dialRR    atomic.Uint32

	lslots [maxSockets]atomic.Pointer[TCPListener]

	ctr tcpCounters
}

type tcpCounters struct {
	In, Out, Retransmits, ActiveOpens, PassiveOpens, ResetsIn, ResetsOut atomic.Uint64
	ChallengeACKs, PAWSRejected, FastRetransmits, Timeouts, OOOSegments  atomic.Uint64
	DupSegments, BacklogDrops, Established, TimeWaitEvicted              atomic.Uint64
	ConnLimitDrops, HalfOpenEvicted                                      atomic.Uint64
	ZeroWindowProbes, KeepAliveProbes, LostRetransmits, TailLossProbes   atomic.Uint64
	SpuriousRTOs, KeepAliveTimeouts, SpuriousTLPs                        atomic.Uint64
}

func (th *tcpHost) init(cfg TCPConfig) {
	cfg.setDefaults()
	th.cfg = cfg
	rand.Read(th.secret[:])
	th.listeners = map[uint32]*TCPListener{}
	th.ports = map[uint16]int{}
	th.conns = map[*TCPConn]struct{}{}
}

// isn is the RFC 6528 initial sequence number: a 4 µs clock plus a keyed hash of the
// connection's addresses and ports. The same hash gives the timestamp offset. The clock is
// the shard's (now, monotonic): it was the wall clock, which made ISNs the one thing the
// tests' fake clock did not drive, and a wall-clock step could move ISNs back. Across
// restarts the secret is new, so the clock's origin does not matter.
func (th *tcpHost) isn(la, ra [4]byte, lp, rp uint16, now int64) (isn, tsOff uint32) {
	var in [44]byte
	copy(in[:32], th.secret[:])
	copy(in[32:], la[:])
	copy(in[36:], ra[:])
	binary.BigEndian.PutUint16(in[40:], lp)
	binary.BigEndian.PutUint16(in[42:], rp)
	sum := sha256.Sum256(in[:])
	clock := uint32(now / 4000)
	return clock + binary.BigEndian.Uint32(sum[:4]), binary.BigEndian.Uint32(sum[4:8])
}

// tcpOwner is the shard that owns a TCP 4-tuple: the one Host.Owner names for its inbound
// segments (the NIC's RSS queue, or pipelines.FlowHash).
func (h *Host) tcpOwner(la, ra [4]byte, lp, rp uint16, shards int) int {
	if shards <= 1 {
		return 0
	}
	if rss := h.rss.Load(); rss != nil {
		return rss.ShardOf(ra, la, rp, lp, true)
	}
	var f [14 + 20 + 4]byte
	f[12], f[13] = 0x08, 0x00
	f[14] = 0x45
	f[14+9] = header.ProtoTCP
	copy(f[14+12:], ra[:])
	copy(f[14+16:], la[:])
	binary.BigEndian.PutUint16(f[34:], rp)
	binary.BigEndian.PutUint16(f[36:], lp)
	fh, _ := pipelines.FlowHash(f[:])
	return int(fh % uint32(shards))
}

// tcpInput handles a TCP segment addressed to us.
func (s *Stack) tcpInput(b *pipelines.Batch, i int, ip header.IPv4, now int64) {
	t, ok := header.ParseTCP(ip.Payload())
	if !ok {
		b.Drop(i, ReasonL4Truncated)
		return
	}
	if !t.ChecksumValid(ip.Src(), ip.Dst()) {
		b.Drop(i, ReasonBadChecksum)
		return
	}
	src, dst := ip.Src4(), ip.Dst4()
	if s.shards > 1 {
		if o := s.h.tcpOwner(dst, src, t.DstPort(), t.SrcPort(), s.shards); o != s.shard {
			b.HandTo(i, o) // no owner function in the pipeline: the owner still gets it
			return
		}
	}
	th := &s.h.tcp
	th.ctr.In.Add(1)
	opts := &s.tcp.opts
	if !header.ParseTCPOptions(t.Options(), opts) {
		b.Drop(i, ReasonTCPBadOptions)
		return
	}
	h, ok := s.tree.Lookup(header.ProtoTCP, dst, src, t.DstPort(), t.SrcPort())
	if ok && uint32(h)&tcpListenerBit == 0 {
		c := s.tcp.conns[h]
		if c.tcb.state == stTimeWait && t.Flags()&(header.TCPFlagSYN|header.TCPFlagACK|header.TCPFlagRST) == header.TCPFlagSYN &&
			(seqGT(t.Seq(), c.tcb.rcvNxt) || (opts.HasTS && c.tcb.tsOK && seqGT(opts.TSVal, c.tcb.tsRecent))) {
			// RFC 6191: a new SYN may reopen a connection in TIME_WAIT.
			s.tcpFree(c)
			h, ok = s.tree.Lookup(header.ProtoTCP, dst, src, t.DstPort(), t.SrcPort())
		} else {
			b.Pkts[i].Verdict = pipelines.Consume
			s.tcpSegment(c, t, opts, now)
			if c.tcb.ackInPlace {
				c.tcb.ackInPlace = false
				if c.tcb.segsUnacked > 0 && !s.tcpAckInPlace(b, i, c, now) {
					c.tcb.ackNow = true
					s.tcpActivate(c)
				}
			}
			return
		}
	}
	if ok {
		if l := th.lslots[(uint32(h)&^tcpListenerBit)%maxSockets].Load(); l != nil && !l.closed.Load() {
			s.tcpListenInput(b, i, l, ip, t, opts, now)
			return
		}
	}
	s.tcpResetReply(b, i, ip, t)
}

// tcpResetReply answers a segment for no connection with a RST, in its own frame (RFC 9293
// §3.10.7.1), unless it is a RST itself.
func (s *Stack) tcpResetReply(b *pipelines.Batch, i int, ip header.IPv4, t header.TCP) {
	fl := t.Flags()
	if fl&header.TCPFlagRST != 0 {
		b.Drop(i, ReasonTCPNoConn)
		return
	}
	src, dst := ip.Src(), ip.Dst()
	sp, dp := t.SrcPort(), t.DstPort()
	seg := uint32(len(t.Payload()))
	if fl&header.TCPFlagSYN != 0 {
		seg++
	}
	if fl&header.TCPFlagFIN != 0 {
		seg++
	}
	f := header.TCPFields{SrcPort: dp, DstPort: sp}
	if fl&header.TCPFlagACK != 0 {
		f.Seq, f.Flags = t.Ack(), header.TCPFlagRST
	} else {
		f.Ack, f.Flags = t.Seq()+seg, header.TCPFlagRST|header.TCPFlagACK
	}
	d := b.Data(i)
	eth := header.Ethernet(d)
	eth.SetDst(eth.Src())
	in := int(b.Pkts[i].InIf)
	eth.SetSrc(s.ourMAC(in))
	header.EncodeIPv4(d[header.EthernetLen:], header.IPv4Fields{TotalLength: 40, ID: s.nextID(), DF: true, TTL: defaultTTL,
		Protocol: header.ProtoTCP, Src: dst, Dst: src})
	r := header.EncodeTCP(d[header.EthernetLen+header.IPv4MinLen:], f, 0)
	r.FixChecksum(dst, src)
	b.SetLen(i, header.EthernetLen+40)
	s.h.tcp.ctr.ResetsOut.Add(1)
	b.Transmit(i, in)
}

// tcpListenInput handles a segment for a listener: a SYN opens a connection in SYN_RCVD.
func (s *Stack) tcpListenInput(b *pipelines.Batch, i int, l *TCPListener, ip header.IPv4, t header.TCP, o *header.TCPOptions, now int64) {
	fl := t.Flags()
	if fl&header.TCPFlagRST != 0 {
		b.Drop(i, ReasonTCPNoConn)
		return
	}
	if fl&header.TCPFlagACK != 0 || fl&header.TCPFlagSYN == 0 {
		s.tcpResetReply(b, i, ip, t)
		return
	}
	src, dst := ip.Src4(), ip.Dst4()
	if _, _, _, ok := s.h.routes.Lookup(src); !ok {
		s.h.ctr.NoRoute.Add(1) // no way to answer (tcpAttach needs the route)
		b.Drop(i, ReasonNoRoute)
		return
	}
	if !l.reserve() && !(s.tcpEvictHalfOpen(l) && l.reserve()) {
		s.h.tcp.ctr.BacklogDrops.Add(1)
		b.Drop(i, ReasonTCPBacklog)
		return
	}
	c := s.h.newConn(netip.AddrPortFrom(netip.AddrFrom4(dst), t.DstPort()), netip.AddrPortFrom(netip.AddrFrom4(src), t.SrcPort()), l.cc)
	c.lst = l
	if !s.tcpAttach(c, now) {
		l.unreserve()
		s.h.tcp.ctr.ConnLimitDrops.Add(1)
		b.Drop(i, ReasonTCPConnLimit)
		return
	}
	k := &c.tcb
	k.passive = true
	k.state = stSynRcvd
	k.irs = t.Seq()
	k.rcvNxt = k.irs + 1
	k.sndWnd = uint32(t.Window()) // never scaled in a SYN
	k.sndWl1, k.sndWl2 = k.irs, k.iss
	k.maxSndWnd = k.sndWnd
	s.tcpNegotiate(c, o, now)
	s.h.tcp.ctr.PassiveOpens.Add(1)
	c.publishState()
	b.Pkts[i].Verdict = pipelines.Consume
	s.tcpActivate(c)
	s.tcpQueueHalfOpen(c)
}

// isHalfOpen reports whether c is a passive connection still in SYN_RCVD (one its listener's
// backlog counts).
func isHalfOpen(c *TCPConn) bool { return c.lst != nil && c.tcb.state == stSynRcvd && c.tcb.idx >= 0 }

// tcpQueueHalfOpen notes a new half-open connection in the shard's SYN queue, oldest first.
// Entries that have left SYN_RCVD stay until the queue is compacted, when it is full.
func (s *Stack) tcpQueueHalfOpen(c *TCPConn) {
	q := s.tcp.synq
	if len(q) == cap(q) {
		keep := q[:0]
		for _, x := range q {
			if isHalfOpen(x) {
				keep = append(keep, x)
			}
		}
		clear(q[len(keep):])
		q = keep
	}
	s.tcp.synq = append(q, c)
}

// tcpEvictHalfOpen makes room in l's full backlog when a SYN arrives: l's oldest half-open
// connection on this shard gives way if its SYN-ACK has gone unanswered for a retransmission
// timeout (a client answers within a round trip; one that has not is most likely a spoofed
// source, and a real one whose ACK was lost sends its SYN again). This is Linux's pruning of
// the SYN queue (inet_csk_reqsk_queue_prune) reduced to its core. Without it, half-open
// connections outlive the SYN retries of every client that dials while they fill the backlog
// (both wait SynRetries timeouts), so a SYN flood of Backlog packets every two minutes would
// keep the listener closed. It reports whether it made room.
func (s *Stack) tcpEvictHalfOpen(l *TCPListener) bool {
	q := s.tcp.synq
	for len(q) > 0 && !isHalfOpen(q[0]) { // the ones gone from the front
		q[0] = nil
		q = q[1:]
	}
	s.tcp.synq = q
	for _, c := range q {
		if c.lst != l || !isHalfOpen(c) {
			continue
		}
		if c.tcb.retries == 0 {
			return false // the oldest is young: the backlog is full of fresh SYNs
		}
		s.h.tcp.ctr.HalfOpenEvicted.Add(1)
		s.tcpFree(c) // gives back its place in the backlog
		return true
	}
	return false
}

// tcpNegotiate applies the options of the peer's SYN.
func (s *Stack) tcpNegotiate(c *TCPConn, o *header.TCPOptions, now int64) {
	k := &c.tcb
	cfg := &s.h.tcp.cfg
	k.peerMSS = 536
	if o.HasMSS {
		// A peer's MSS below minPeerMSS is raised to it, as Linux does (tcp_min_snd_mss):
		// below 12 with timestamps, the payload per segment (the MSS less the option) used
		// to wrap around to 4 GiB, and at 12 to 0, and the connection sent no data at all.
		k.peerMSS = max(uint32(o.MSS), minPeerMSS)
	}
	if o.HasWScale && !cfg.NoWindowScale {
		k.wsOK = true
		k.sndWscale = min(o.WScale, 14)
	} else {
		k.rcvWscale = 0
	}
	if o.HasTS && !cfg.NoTimestamps {
		k.tsOK = true
		k.tsRecent, k.tsRecentAt = o.TSVal, now
	}
	k.sackOK = o.SACKPermitted && !cfg.NoSACK
	k.mss = min(k.peerMSS, uint32(s.mtu(c.ifc)-40))
	if k.tsOK {
		k.mss -= 12
	}
	k.cc.init(k.mss, now)
}

// tcpAttach gives a new connection a slot and a flow-tree entry on this shard, its ISN and
// its route.
func (s *Stack) tcpAttach(c *TCPConn, now int64) bool {
	ts := &s.tcp
	cfg := &s.h.tcp.cfg
	if ts.nconns >= cfg.MaxConns {
		if len(ts.tw) == 0 {
			return false
		}
		s.h.tcp.ctr.TimeWaitEvicted.Add(1) // counted like tcpTimeWait's evictions
		s.tcpFree(ts.tw[0])
	}
	la, ra := c.local.Addr().As4(), c.remote.Addr().As4()
	ifc, nh, _, ok := s.h.routes.Lookup(ra)
	if !ok {
		return false
	}
	var idx int32
	if n := len(ts.free); n > 0 {
		idx = ts.free[n-1]
		ts.free = ts.free[:n-1]
	} else {
		idx = int32(len(ts.conns))
		ts.conns = append(ts.conns, nil)
	}
	k := flowtree.Key{Proto: header.ProtoTCP, LocalAddr: c.local.Addr(), LocalPort: c.local.Port(), RemoteAddr: c.remote.Addr(), RemotePort: c.remote.Port()}
	if err := s.tree.Insert(k, flowtree.Handle(idx)); err != nil {
		ts.free = append(ts.free, idx)
		return false
	}
	ts.conns[idx] = c
	ts.nconns++
	c.st = s
	c.ifc, c.nh = ifc, nh
	t := &c.tcb
	t.idx = idx
	t.iss, t.tsOffset = s.h.tcp.isn(la, ra, c.local.Port(), c.remote.Port(), now)
	t.sndUna, t.sndNxt, t.sndMax = t.iss, t.iss, t.iss
	t.sndBase = t.iss + 1
	t.recover = t.iss
	t.rtt.init(cfg)
	t.lastRecv = now
	if !cfg.NoWindowScale {
		for ws := uint8(0); ws < 14 && len(c.rbuf)>>ws > 65535; ws++ {
			t.rcvWscale = ws + 1
		}
	}
	c.shard = s.shard
	s.h.tcp.mu.Lock()
	s.h.tcp.conns[c] = struct{}{}
	s.h.tcp.mu.Unlock()
	return true
}

// tcpFree removes a connection from this shard.
func (s *Stack) tcpFree(c *TCPConn) {
	ts := &s.tcp
	t := &c.tcb
	if t.idx < 0 {
		return
	}
	if t.state == stSynRcvd && c.lst != nil {
		c.lst.unreserve()
	}
	if t.state == stTimeWait {
		for j, x := range ts.tw {
			if x == c {
				copy(ts.tw[j:], ts.tw[j+1:])
				ts.tw[len(ts.tw)-1] = nil
				ts.tw = ts.tw[:len(ts.tw)-1]
				break
			}
		}
	}
	s.tree.Delete(flowtree.Key{Proto: header.ProtoTCP, LocalAddr: c.local.Addr(), LocalPort: c.local.Port(), RemoteAddr: c.remote.Addr(), RemotePort: c.remote.Port()})
	ts.conns[t.idx] = nil
	ts.free = append(ts.free, t.idx)
	ts.nconns--
	t.idx = -1
	t.state = stClosed
	t.rtoAt, t.delackAt, t.persistAt, t.twAt, t.kaAt, t.finAt, t.tlpAt = 0, 0, 0, 0, 0, 0, 0
	c.publishState()
	c.terminate(nil)
	s.h.tcp.mu.Lock()
	delete(s.h.tcp.conns, c)
	s.h.tcp.mu.Unlock()
}

// tcpActivate puts a connection on the shard's list for the next output pass.
func (s *Stack) tcpActivate(c *TCPConn) {
	if !c.tcb.queued {
		c.tcb.queued = true
		s.tcp.active = append(s.tcp.active, c)
	}
}

func (s *Stack) tcpArm(at int64) {
	if at != 0 && (s.tcp.next == 0 || at < s.tcp.next) {
		s.tcp.next = at
	}
}

// tcpReset ends a connection because of a RST or a timeout: the user sees err.
func (s *Stack) tcpReset(c *TCPConn, err error) {
	c.setErr(err)
	s.tcpFree(c)
}

func (s *Stack) challengeACK(c *TCPConn, now int64) {
	ts := &s.tcp
	rate := float64(s.h.tcp.cfg.ChallengeACKsPerSecond)
	if ts.chLast == 0 {
		ts.chTokens, ts.chLast = rate, now
	}
	ts.chTokens += float64(now-ts.chLast) / 1e9 * rate
	if ts.chTokens > rate {
		ts.chTokens = rate
	}
	ts.chLast = now
	if ts.chTokens < 1 {
		return
	}
	ts.chTokens--
	s.h.tcp.ctr.ChallengeACKs.Add(1)
	c.tcb.ackNow = true
	s.tcpActivate(c)
}

// tcpSegment is RFC 9293 §3.10.7.4 (and 3.10.7.3 for SYN_SENT) for one segment.
func (s *Stack) tcpSegment(c *TCPConn, t header.TCP, o *header.TCPOptions, now int64) {
	k := &c.tcb
	fl := t.Flags()
	seq, ack := t.Seq(), t.Ack()
	payload := t.Payload()
	k.lastRecv = now
	k.kaProbes = 0
	if fl&header.TCPFlagRST != 0 {
		s.h.tcp.ctr.ResetsIn.Add(1)
	}

	if k.state == stSynSent {
		s.tcpSynSent(c, t, o, now)
		return
	}

	// PAWS (RFC 7323 §5), with a tolerance of one timestamp tick as Linux has
	// (TCP_PAWS_WINDOW): segments of one burst that reordering (the network, the hand-off
	// between shards) delivers behind a later one carry a timestamp at most a tick older, and
	// rejecting them turns mere reordering into loss. A replay from further back is still
	// caught.
	if k.tsOK && o.HasTS && fl&header.TCPFlagRST == 0 && int32(k.tsRecent-o.TSVal) > pawsWindow && now-k.tsRecentAt < int64(24*24*time.Hour) {
		s.h.tcp.ctr.PAWSRejected.Add(1)
		k.ackNow = true
		s.tcpActivate(c)
		return
	}

	// Simultaneous open (RFC 9293 §3.5, figure 8): in SYN_RCVD after our own SYN_SENT, the
	// peer's SYN-ACK repeats the SYN we have (seq = IRS) and acks ours. By the letter of
	// §3.10.7.4 it is unacceptable (it lies before RCV.NXT) and only draws an ACK; it used to
	// be taken for a retransmitted SYN and answered with our SYN-ACK, and the peer, in the
	// same state, did the same, so the two bounced SYN-ACKs until the SYN retries ran out.
	// As Linux does (tcp_validate_incoming), take its ACK now: drop the SYN, process the rest,
	// and ACK the SYN-ACK (a SYN-ACK of ours that was lost costs no RTO then).
	if k.state == stSynRcvd && !k.passive && fl&(header.TCPFlagSYN|header.TCPFlagACK|header.TCPFlagRST) == header.TCPFlagSYN|header.TCPFlagACK &&
		seq == k.irs && seqGT(ack, k.sndUna) && seqLEQ(ack, k.sndMax) {
		fl &^= header.TCPFlagSYN
		seq++
		k.ackNow = true
	}

	// Acceptability.
	segLen := uint32(len(payload))
	if fl&header.TCPFlagSYN != 0 {
		segLen++
	}
	if fl&header.TCPFlagFIN != 0 {
		segLen++
	}
	wnd := k.rcvAdv - k.rcvNxt
	if seqLT(k.rcvAdv, k.rcvNxt) {
		wnd = 0
	}
	acceptable := false
	switch {
	case segLen == 0 && wnd == 0:
		acceptable = seq == k.rcvNxt
	case segLen == 0:
		acceptable = seqGEQ(seq, k.rcvNxt) && seqLT(seq, k.rcvNxt+wnd)
	case wnd == 0:
		acceptable = false
	default:
		acceptable = (seqGEQ(seq, k.rcvNxt) && seqLT(seq, k.rcvNxt+wnd)) ||
			(seqGEQ(seq+segLen-1, k.rcvNxt) && seqLT(seq+segLen-1, k.rcvNxt+wnd))
	}
	if !acceptable {
		if k.state == stSynRcvd && fl&header.TCPFlagSYN != 0 && seq == k.irs {
			// The peer retransmitted its SYN: send the SYN-ACK again.
			k.sndNxt = k.iss
			s.tcpActivate(c)
			return
		}
		if fl&header.TCPFlagRST == 0 {
			if segLen > 0 {
				s.h.tcp.ctr.DupSegments.Add(1)
				if k.sackOK && len(payload) > 0 && seqLEQ(seq+uint32(len(payload)), k.rcvNxt) {
					// Report it with a D-SACK block (RFC 2883): the sender learns that the
					// original arrived, and that its retransmission or probe was spurious.
					k.dsackLo, k.dsackHi = seq, seq+uint32(len(payload))
				}
			}
			k.ackNow = true
			s.tcpActivate(c)
		}
		if k.state == stTimeWait && fl&header.TCPFlagFIN != 0 {
			k.twAt = now + int64(s.h.tcp.cfg.TimeWait)
			s.tcpArm(k.twAt)
		}
		return
	}
	// Trim to the window.
	if seqLT(seq, k.rcvNxt) {
		d := k.rcvNxt - seq
		if fl&header.TCPFlagSYN != 0 {
			fl &^= header.TCPFlagSYN
			seq++
			d--
		}
		if int(d) >= len(payload) {
			if int(d) > len(payload) && fl&header.TCPFlagFIN != 0 {
				fl &^= header.TCPFlagFIN // the FIN is old too
			}
			d = uint32(len(payload))
		}
		payload = payload[d:]
		seq += d
	}
	if end := seq + uint32(len(payload)); seqGT(end, k.rcvNxt+wnd) {
		payload = payload[:len(payload)-int(end-(k.rcvNxt+wnd))]
		fl &^= header.TCPFlagFIN
	}

	// RST (RFC 5961 §3).
	if fl&header.TCPFlagRST != 0 {
		if seq != k.rcvNxt {
			s.challengeACK(c, now)
			return
		}
		switch k.state {
		case stSynRcvd:
			if k.passive {
				s.tcpFree(c)
				return
			}
			s.tcpReset(c, syscall.ECONNREFUSED)
		case stClosing, stLastAck, stTimeWait:
			s.tcpFree(c)
		default:
			s.tcpReset(c, syscall.ECONNRESET)
		}
		return
	}
	// SYN in a synchronized state (RFC 5961 §4).
	if fl&header.TCPFlagSYN != 0 {
		s.challengeACK(c, now)
		return
	}
	if fl&header.TCPFlagACK == 0 {
		return
	}
	// TS.Recent (RFC 7323 §4.3).
	if k.tsOK && o.HasTS && seqLEQ(seq, k.lastAckSent) {
		k.tsRecent, k.tsRecentAt = o.TSVal, now
	}

	// ACK.
	if k.state == stSynRcvd {
		if seqLEQ(ack, k.sndUna) || seqGT(ack, k.sndMax) {
			s.tcpRSTFor(c, ack)
			return
		}
		k.state = stEstablished
		k.sndWnd = k.segWnd(t)
		k.maxSndWnd = max(k.maxSndWnd, k.sndWnd)
		k.sndWl1, k.sndWl2 = seq, ack
		s.tcpEstablished(c, now)
	}
	if !s.tcpAck(c, t, seq, ack, o, len(payload), now) {
		return
	}
	if k.idx < 0 {
		return // LAST_ACK ended
	}

	// Data.
	if len(payload) > 0 {
		switch k.state {
		case stEstablished, stFinWait1, stFinWait2:
			if c.userClosed.Load() {
				// Nobody will read it (RFC 9293 §3.10.7.4 and RFC 2525): abort.
				s.tcpRSTFor(c, k.sndNxt)
				s.tcpFree(c)
				return
			}
			s.tcpData(c, seq, payload, fl&header.TCPFlagPSH != 0, now)
		}
	}
	// FIN.
	if fl&header.TCPFlagFIN != 0 {
		finSeq := seq + uint32(len(payload))
		if finSeq == k.rcvNxt {
			s.tcpFin(c, now)
		} else if seqGT(finSeq, k.rcvNxt) {
			k.oooFin, k.oooFinSeq = true, finSeq
		}
	}
}

// tcpSynSent is RFC 9293 §3.10.7.3.
func (s *Stack) tcpSynSent(c *TCPConn, t header.TCP, o *header.TCPOptions, now int64) {
	k := &c.tcb
	fl := t.Flags()
	seq, ack := t.Seq(), t.Ack()
	hasACK := fl&header.TCPFlagACK != 0
	if hasACK && (seqLEQ(ack, k.iss) || seqGT(ack, k.sndMax)) {
		if fl&header.TCPFlagRST == 0 {
			s.tcpRSTFor(c, ack)
		}
		return
	}
	if fl&header.TCPFlagRST != 0 {
		if hasACK {
			s.tcpReset(c, syscall.ECONNREFUSED)
		}
		return
	}
	if fl&header.TCPFlagSYN == 0 {
		return
	}
	k.irs = seq
	k.rcvNxt = seq + 1
	k.rcvAdv = k.rcvNxt + uint32(min(len(c.rbuf), 65535)) // what our SYN offered
	s.tcpNegotiate(c, o, now)
	if !k.wsOK {
		k.rcvWscale = 0
	}
	k.sndWl1, k.sndWl2 = seq, ack
	if hasACK {
		k.sndUna = ack
		k.sndWnd = k.segWnd(t) // a SYN-ACK: unscaled
		k.maxSndWnd = k.sndWnd
		k.state = stEstablished
		if k.rttTiming {
			k.rtt.sample(now - k.rttTime)
			k.rttTiming = false
		}
		k.rtoAt, k.rtt.backoff, k.retries = 0, 0, 0
		k.ackNow = true
		s.tcpEstablished(c, now)
		s.tcpActivate(c)
		return
	}
	// Simultaneous open: SYN_RCVD, our SYN goes again with an ACK.
	k.sndWnd = uint32(t.Window())
	k.maxSndWnd = k.sndWnd
	k.state = stSynRcvd
	k.sndNxt = k.iss
	c.publishState()
	s.tcpActivate(c)
}

// segWnd is the window a segment offers. The window of a SYN is never scaled (RFC 7323
// §2.2): the SYN-ACK's used to be, which overstated the peer's window (65535 << its shift)
// until its next segment.
func (k *tcb) segWnd(t header.TCP) uint32 {
	if t.Flags()&header.TCPFlagSYN != 0 {
		return uint32(t.Window())
	}
	return uint32(t.Window()) << k.sndWscale
}

// tcpEstablished runs when the handshake completes.
func (s *Stack) tcpEstablished(c *TCPConn, now int64) {
	k := &c.tcb
	k.established = true
	k.rtoAt, k.rtt.backoff, k.retries = 0, 0, 0
	s.tcpKeepAliveArm(c, now)
	s.h.tcp.ctr.Established.Add(1)
	c.publishState()
	if k.passive && c.lst != nil {
		l := c.lst
		c.lst = nil
		l.unreserve()
		if l.newApp != nil && !l.closed.Load() {
			c.app = s.tcpAppFor(l)
			c.appReady()
		} else if !l.enqueue(c) {
			s.tcpRSTFor(c, k.sndNxt)
			s.tcpFree(c)
			return
		}
	}
	c.signalEstablished()
}

// tcpRSTFor sends a RST on a connection with sequence number seq.
func (s *Stack) tcpRSTFor(c *TCPConn, seq uint32) {
	s.tcp.orphans = append(s.tcp.orphans, orphanRST{la: c.local, ra: c.remote, seq: seq, ifc: c.ifc, nh: c.nh})
}

// TCPStats are the host's TCP counters.
type TCPStats struct {
	SegmentsIn      uint64 `json:"segments_in"`
	SegmentsOut     uint64 `json:"segments_out"`
	Retransmits     uint64 `json:"retransmits"`
	FastRetransmits uint64 `json:"fast_retransmits"`
	LostRetransmits uint64 `json:"lost_retransmits"` // retransmissions found lost by SACK (no RTO needed)
	TailLossProbes  uint64 `json:"tail_loss_probes"`
	SpuriousRTOs    uint64 `json:"spurious_rtos"` // RTOs undone by the Eifel check (RFC 3522, RFC 4015)
	// SpuriousTLPs counts loss probes of a lone segment that the peer reported as duplicates
	// (D-SACK) while it had sent nothing new: it was delaying its ACK (see TCPConfig.TLPMaxAckDelay).
	SpuriousTLPs     uint64 `json:"spurious_tlps"`
	Timeouts         uint64 `json:"timeouts"`
	ActiveOpens      uint64 `json:"active_opens"`
	PassiveOpens     uint64 `json:"passive_opens"`
	Established      uint64 `json:"established"`
	ResetsIn         uint64 `json:"resets_in"`
	ResetsOut        uint64 `json:"resets_out"`
	ChallengeACKs    uint64 `json:"challenge_acks"`
	PAWSRejected     uint64 `json:"paws_rejected"`
	OOOSegments      uint64 `json:"out_of_order_segments"`
	DupSegments      uint64 `json:"duplicate_segments"`
	BacklogDrops     uint64 `json:"backlog_drops"`
	ConnLimitDrops   uint64 `json:"connection_limit_drops"` // SYNs refused at MaxConns (reason tcp-connection-limit)
	HalfOpenEvicted  uint64 `json:"half_open_evicted"`      // half-open connections given up for a SYN (TCPConfig.Backlog)
	TimeWaitEvicted  uint64 `json:"time_wait_evicted"`
	ZeroWindowProbes uint64 `json:"zero_window_probes"`
	KeepAliveProbes  uint64 `json:"keepalive_probes"`
	// KeepAliveTimeouts counts connections reset after KeepAliveCount unanswered probes.
	KeepAliveTimeouts uint64 `json:"keepalive_timeouts"`
	Conns             int    `json:"connections"`
}

func (th *tcpHost) stats() TCPStats {
	c := &th.ctr
	th.mu.Lock()
	n := len(th.conns)
	th.mu.Unlock()
	return TCPStats{SegmentsIn: c.In.Load(), SegmentsOut: c.Out.Load(), Retransmits: c.Retransmits.Load(),
		FastRetransmits: c.FastRetransmits.Load(), LostRetransmits: c.LostRetransmits.Load(), TailLossProbes: c.TailLossProbes.Load(), SpuriousRTOs: c.SpuriousRTOs.Load(), SpuriousTLPs: c.SpuriousTLPs.Load(), Timeouts: c.Timeouts.Load(), ActiveOpens: c.ActiveOpens.Load(),
		PassiveOpens: c.PassiveOpens.Load(), Established: c.Established.Load(), ResetsIn: c.ResetsIn.Load(),
		ResetsOut: c.ResetsOut.Load(), ChallengeACKs: c.ChallengeACKs.Load(), PAWSRejected: c.PAWSRejected.Load(),
		OOOSegments: c.OOOSegments.Load(), DupSegments: c.DupSegments.Load(), BacklogDrops: c.BacklogDrops.Load(), ConnLimitDrops: c.ConnLimitDrops.Load(), HalfOpenEvicted: c.HalfOpenEvicted.Load(),
		TimeWaitEvicted: c.TimeWaitEvicted.Load(), ZeroWindowProbes: c.ZeroWindowProbes.Load(),
		KeepAliveProbes: c.KeepAliveProbes.Load(), KeepAliveTimeouts: c.KeepAliveTimeouts.Load(), Conns: n}
}
