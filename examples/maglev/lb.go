package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/stack/header"
)

// The load balancer's own drop reasons, counted by name per shard like every other drop.
var (
	reasonNoBackend = pipelines.RegisterReason("lb-no-backend")   // the backend set is empty
	reasonNotVIP    = pipelines.RegisterReason("lb-not-vip")      // claimed, but not to the VIP (or an ARP that is not a request for it)
	reasonProto     = pipelines.RegisterReason("lb-not-tcp-udp")  // to the VIP, but neither TCP nor UDP
	reasonFragment  = pipelines.RegisterReason("lb-fragment")     // a later fragment: it has no ports to hash
	reasonNotIPv4   = pipelines.RegisterReason("lb-not-ipv4-arp") // neither IPv4 nor ARP
)

// Backend is one real server: a name (any unique, stable string; its Maglev slots derive from
// it) and the MAC address the load balancer rewrites the destination to. The backend holds
// the VIP on a local interface (lo) and does not answer ARP for it.
type Backend struct {
	Name string
	MAC  header.MAC
}

// Options tune an LB; zero fields take the defaults.
type Options struct {
	// TableSize is the Maglev table's size, a prime (default DefaultTableSize, 65537).
	TableSize int
	// Conns is the connection table's capacity per shard (default 65536). A new flow that
	// finds its shard's table full is forwarded by the Maglev table alone and counted
	// (Stats.Untracked).
	Conns int
	// Idle is how long a connection entry lives without packets (default 5 minutes).
	Idle time.Duration
	// Seed varies the 5-tuple hash; every load balancer of one VIP must use the same seed
	// (and the same backend names and table size) so that they agree on new flows.
	Seed uint64
}

// Stats are the load balancer's counters, summed over the shards.
type Stats struct {
	NewFlows    uint64 // first packets of flows not in the connection table
	Tracked     uint64 // packets forwarded by a connection entry
	Rescheduled uint64 // packets of tracked flows whose backend was removed: moved by the table
	Untracked   uint64 // new flows not tracked because the shard's connection table was full
	Expired     uint64 // connection entries removed after Idle without packets
	ARPReplies  uint64 // ARP requests for the VIP answered
	Conns       uint64 // connection entries now
}

// LB is a Maglev load balancer for one VIP with direct server return: it picks a backend per
// flow and forwards the frame unchanged but for its Ethernet addresses. The backend set may
// change at any time (SetBackends, AddBackend, RemoveBackend); the shards see the old set or
// the new one, never a table half built.
type LB struct {
	vip  [4]byte
	opts Options

	mu     sync.Mutex        // serialises control-plane changes
	ids    map[string]uint16 // stable id of every backend name ever seen
	names  []string          // name by id
	shards []*shardCounters

	state atomic.Pointer[lbState]
}

// lbState is one immutable backend set: the Maglev table over the live backends and, by stable
// id, every backend's MAC and whether it is live. Connection entries store ids, so they stay
// valid across tables.
type lbState struct {
	table *Table
	ids   []uint16     // table index -> id
	macs  []header.MAC // by id
	live  []bool       // by id
}

// NewLB returns a load balancer for vip over backends.
func NewLB(vip netip.Addr, backends []Backend, opts Options) (*LB, error) {
	if !vip.Is4() {
		return nil, fmt.Errorf("maglev: VIP %v is not an IPv4 address", vip)
	}
	if opts.TableSize == 0 {
		opts.TableSize = DefaultTableSize
	}
	if opts.Conns == 0 {
		opts.Conns = 65536
	}
	if opts.Conns < 1 || opts.Conns > flowtree.MaxCapacity {
		return nil, fmt.Errorf("maglev: Conns %d is out of [1, %d]", opts.Conns, flowtree.MaxCapacity)
	}
	if opts.Idle == 0 {
		opts.Idle = 5 * time.Minute
	}
	lb := &LB{vip: vip.As4(), opts: opts, ids: map[string]uint16{}}
	if err := lb.SetBackends(backends); err != nil {
		return nil, err
	}
	return lb, nil
}

// VIP is the load balancer's virtual address.
func (lb *LB) VIP() netip.Addr { return netip.AddrFrom4(lb.vip) }

// SetBackends replaces the backend set: it builds the Maglev table for the new set and swaps
// it in with one atomic store. Tracked flows keep their backend if it is still in the set.
func (lb *LB) SetBackends(backends []Backend) error {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.setLocked(backends)
}

// AddBackend adds b to the set (or changes the MAC of the backend of that name).
func (lb *LB) AddBackend(b Backend) error {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	bs := lb.backendsLocked()
	if i := slices.IndexFunc(bs, func(x Backend) bool { return x.Name == b.Name }); i >= 0 {
		bs[i] = b
	} else {
		bs = append(bs, b)
	}
	return lb.setLocked(bs)
}

// RemoveBackend takes the backend named name out of the set. Its tracked flows are moved,
// at their next packet, to the backend the new table names, and tracked there from then on.
func (lb *LB) RemoveBackend(name string) error {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	bs := lb.backendsLocked()
	i := slices.IndexFunc(bs, func(x Backend) bool { return x.Name == name })
	if i < 0 {
		return fmt.Errorf("maglev: no backend %q", name)
	}
	return lb.setLocked(slices.Delete(bs, i, i+1))
}

// Backends returns the current backend set, in table order.
func (lb *LB) Backends() []Backend {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.backendsLocked()
}

// Table returns the Maglev table in use now.
func (lb *LB) Table() *Table { return lb.state.Load().table }

func (lb *LB) backendsLocked() []Backend {
	st := lb.state.Load()
	if st == nil {
		return nil
	}
	bs := make([]Backend, len(st.ids))
	for i, id := range st.ids {
		bs[i] = Backend{Name: lb.names[id], MAC: st.macs[id]}
	}
	return bs
}

func (lb *LB) setLocked(backends []Backend) error {
	names := make([]string, len(backends))
	for i, b := range backends {
		names[i] = b.Name
	}
	table, err := NewTable(names, lb.opts.TableSize)
	if err != nil {
		return fmt.Errorf("maglev: %w", err)
	}
	for _, n := range names {
		if _, ok := lb.ids[n]; !ok {
			if len(lb.names) > MaxBackends {
				return fmt.Errorf("maglev: more than %d backend names seen", MaxBackends)
			}
			lb.ids[n] = uint16(len(lb.names))
			lb.names = append(lb.names, n)
		}
	}
	st := &lbState{table: table, ids: make([]uint16, len(backends)),
		macs: make([]header.MAC, len(lb.names)), live: make([]bool, len(lb.names))}
	if old := lb.state.Load(); old != nil {
		copy(st.macs, old.macs) // a removed backend keeps its MAC for the record
	}
	for i, b := range backends {
		id := lb.ids[b.Name]
		st.ids[i], st.macs[id], st.live[id] = id, b.MAC, true
	}
	lb.state.Store(st)
	return nil
}

// Stats sums the shards' counters; safe while the shards run.
func (lb *LB) Stats() Stats {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var s Stats
	for _, c := range lb.shards {
		s.NewFlows += c.newFlows.Load()
		s.Tracked += c.tracked.Load()
		s.Rescheduled += c.rescheduled.Load()
		s.Untracked += c.untracked.Load()
		s.Expired += c.expired.Load()
		s.ARPReplies += c.arp.Load()
		s.Conns += c.conns.Load()
	}
	return s
}

// App is the netchan App: the VIP's IPv4 packets and the ARP requests for it are claimed (the
// rest of the interface stays with the kernel), the owner function keeps every flow on one
// shard (that shard's connection table tracks it), and each shard runs one Stage.
func (lb *LB) App() netchan.App {
	vip := lb.VIP()
	return netchan.App{
		Name:        "maglev",
		Claims:      []claim.Rule{claim.Prefix(netip.PrefixFrom(vip, 32)), claim.ARP(vip)},
		Owner:       lb.Owner,
		NewPipeline: func(int) *pipelines.Pipeline { return &pipelines.Pipeline{Stages: []pipelines.Stage{lb.NewStage()}} },
	}
}

// Owner names the shard owning a packet's flow: the high 32 bits of the flow hash modulo the
// shard count (the table uses the hash modulo its prime size, so the two choices are
// independent). ARP and later fragments stay where they arrived.
func (lb *LB) Owner(data []byte, shards int) int {
	if shards <= 1 {
		return -1
	}
	ip, ok := header.IPv4InFrame(data)
	if !ok {
		return -1
	}
	sp, dp, ok := ip.Ports()
	if !ok {
		return -1
	}
	return int((lb.FlowHash(ip.Protocol(), ip.Src4(), ip.Dst4(), sp, dp) >> 32) % uint64(shards))
}

// FlowHash is the hash the table is looked up with: a directional hash of the 5-tuple
// (protocol, source and destination address and port), seeded by Options.Seed. It is
// directional on purpose: with direct server return the load balancer only ever sees the
// client-to-VIP direction, so pipelines.FlowHash's symmetry would buy nothing, and its
// symmetric form (it folds src^dst and sport^dport) gives distinct flows equal hashes, which
// a directional hash does not.
func (lb *LB) FlowHash(proto uint8, src, dst [4]byte, sport, dport uint16) uint64 {
	a := uint64(binary.BigEndian.Uint32(src[:]))<<32 | uint64(binary.BigEndian.Uint32(dst[:]))
	b := uint64(sport)<<48 | uint64(dport)<<32 | uint64(proto)
	return mix64(mix64(a^lb.opts.Seed) ^ b)
}

// shardCounters are one shard's counters: written by the shard once per batch, read by Stats.
type shardCounters struct {
	newFlows, tracked, rescheduled, untracked, expired, arp, conns atomic.Uint64
}

// conn is one connection entry: the flow's key (to delete it from the tree when it expires),
// its backend's stable id and when it last saw a packet. No pointers: the GC never scans the
// table.
type conn struct {
	client   [4]byte
	cport    uint16
	vport    uint16
	proto    uint8
	used     bool
	backend  uint16
	lastSeen int64
}

// sweepPerBatch is how many connection slots each batch examines for expiry: a clock hand
// that goes round the whole table once every Conns/sweepPerBatch batches.
const sweepPerBatch = 32

// Stage is one shard's load-balancing stage: its connection table (a flowtree.Tree from
// 5-tuple to an index into a fixed array of entries, with a free list) and its counters.
type Stage struct {
	lb    *LB
	tree  *flowtree.Tree
	conns []conn
	free  []uint32
	hand  int
	idle  int64
	macs  []header.MAC // the shard's interfaces' MAC addresses
	cnt   *shardCounters

	// counts of the current batch, added to cnt once per batch
	newFlows, tracked, rescheduled, untracked, expired, arp uint64
}

// NewStage returns a stage for one shard, with its own connection table.
func (lb *LB) NewStage() *Stage {
	s := &Stage{
		lb:    lb,
		tree:  flowtree.New(lb.opts.Conns),
		conns: make([]conn, lb.opts.Conns),
		free:  make([]uint32, lb.opts.Conns),
		idle:  int64(lb.opts.Idle),
		cnt:   &shardCounters{},
	}
	for i := range s.free {
		s.free[i] = uint32(len(s.free) - 1 - i)
	}
	lb.mu.Lock()
	lb.shards = append(lb.shards, s.cnt)
	lb.mu.Unlock()
	return s
}

// Name implements pipelines.Stage.
func (s *Stage) Name() string { return "maglev" }

// Start implements pipelines.Starter: the stage learns its interfaces' MAC addresses.
func (s *Stage) Start(info pipelines.ShardInfo) {
	s.macs = make([]header.MAC, len(info.Ifaces))
	for i, f := range info.Ifaces {
		s.macs[i] = f.MAC
	}
}

// Process implements pipelines.Stage. Per packet to the VIP: look the 5-tuple up in the
// connection table; a hit whose backend is live forwards there; a miss (or a hit whose backend
// was removed) asks the Maglev table and records the answer. Forwarding rewrites the Ethernet
// destination to the backend's MAC and the source to the interface's, and transmits on the
// interface the packet came in on (direct server return: the backend answers the client
// itself). IP and transport headers are not touched, so no checksum changes.
func (s *Stage) Process(b *pipelines.Batch) {
	st := s.lb.state.Load() // one backend set for the whole batch
	now := b.NowNanos
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != pipelines.Continue {
			continue
		}
		data := b.Data(i)
		ip, ok := header.IPv4InFrame(data)
		if !ok {
			s.answerARP(b, i, data)
			continue
		}
		if ip.Dst4() != s.lb.vip {
			b.Drop(i, reasonNotVIP)
			continue
		}
		proto := ip.Protocol()
		if proto != header.ProtoTCP && proto != header.ProtoUDP {
			b.Drop(i, reasonProto)
			continue
		}
		sp, dp, ok := ip.Ports()
		if !ok {
			b.Drop(i, reasonFragment)
			continue
		}
		src := ip.Src4()
		var id uint16
		if h, found := s.tree.Lookup(proto, s.lb.vip, src, dp, sp); found {
			c := &s.conns[h]
			c.lastSeen = now
			if int(c.backend) < len(st.live) && st.live[c.backend] {
				id = c.backend
				s.tracked++
			} else {
				k := st.table.Lookup(s.lb.FlowHash(proto, src, s.lb.vip, sp, dp))
				if k < 0 {
					b.Drop(i, reasonNoBackend)
					continue
				}
				id = st.ids[k]
				c.backend = id
				s.rescheduled++
			}
		} else {
			k := st.table.Lookup(s.lb.FlowHash(proto, src, s.lb.vip, sp, dp))
			if k < 0 {
				b.Drop(i, reasonNoBackend)
				continue
			}
			id = st.ids[k]
			s.newFlows++
			s.track(proto, src, sp, dp, id, now)
		}
		eth := header.Ethernet(data)
		eth.SetDst(st.macs[id])
		if int(p.InIf) < len(s.macs) {
			eth.SetSrc(s.macs[p.InIf])
		}
		b.Transmit(i, int(p.InIf))
	}
	s.sweep(now)
	s.flush()
}

// track records a new flow, unless the table is full (then the Maglev table alone keeps it on
// its backend while the set does not change).
func (s *Stage) track(proto uint8, client [4]byte, cport, vport, id uint16, now int64) {
	if len(s.free) == 0 {
		s.untracked++
		return
	}
	h := s.free[len(s.free)-1]
	key := flowtree.Key{Proto: proto, LocalAddr: netip.AddrFrom4(s.lb.vip), RemoteAddr: netip.AddrFrom4(client),
		LocalPort: vport, RemotePort: cport}
	if s.tree.Insert(key, flowtree.Handle(h)) != nil {
		s.untracked++ // cannot happen: the free list and the tree have the same capacity
		return
	}
	s.free = s.free[:len(s.free)-1]
	s.conns[h] = conn{client: client, cport: cport, vport: vport, proto: proto, used: true, backend: id, lastSeen: now}
}

// sweep moves the clock hand over sweepPerBatch entries and removes those idle for longer
// than Idle.
func (s *Stage) sweep(now int64) {
	for range sweepPerBatch {
		c := &s.conns[s.hand]
		if c.used && now-c.lastSeen > s.idle {
			s.tree.Delete(flowtree.Key{Proto: c.proto, LocalAddr: netip.AddrFrom4(s.lb.vip), RemoteAddr: netip.AddrFrom4(c.client),
				LocalPort: c.vport, RemotePort: c.cport})
			c.used = false
			s.free = append(s.free, uint32(s.hand))
			s.expired++
		}
		if s.hand++; s.hand == len(s.conns) {
			s.hand = 0
		}
	}
}

// answerARP turns an ARP request for the VIP into the reply, in place, and sends it back: the
// load balancer, not the backends, owns the VIP on the wire.
func (s *Stage) answerARP(b *pipelines.Batch, i int, data []byte) {
	eth, ok := header.ParseEthernet(data)
	if !ok || eth.Type() != header.EtherTypeARP {
		b.Drop(i, reasonNotIPv4)
		return
	}
	a, ok := header.ParseARP(eth.Payload())
	inIf := int(b.Pkts[i].InIf)
	if !ok || a.Op() != header.ARPRequest || a.TargetIP4() != s.lb.vip || inIf >= len(s.macs) {
		b.Drop(i, reasonNotVIP)
		return
	}
	asker, askerIP, mine := a.SenderMAC(), a.SenderIP4(), s.macs[inIf]
	header.EncodeARP4(a, header.ARPReply, mine, s.lb.vip, asker, askerIP)
	eth.SetDst(asker)
	eth.SetSrc(mine)
	b.Transmit(i, inIf)
	s.arp++
}

// flush adds the batch's counts to the shared counters.
func (s *Stage) flush() {
	add := func(c *atomic.Uint64, v *uint64) {
		if *v != 0 {
			c.Add(*v)
			*v = 0
		}
	}
	add(&s.cnt.newFlows, &s.newFlows)
	add(&s.cnt.tracked, &s.tracked)
	add(&s.cnt.rescheduled, &s.rescheduled)
	add(&s.cnt.untracked, &s.untracked)
	add(&s.cnt.expired, &s.expired)
	add(&s.cnt.arp, &s.arp)
	s.cnt.conns.Store(uint64(len(s.conns) - len(s.free)))
}
