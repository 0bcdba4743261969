package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// GVisorOptions size the gVisor side.
type GVisorOptions struct {
	// SendBuffer and RecvBuffer are the TCP buffer sizes (stack-wide defaults and maxima).
	// gVisor advertises half of its receive buffer as window (rcvAdvWndScale = 1), so the
	// default receive buffer of 512 KiB gives the same 256 KiB window as netchan's default.
	SendBuffer, RecvBuffer int
	// Defaults keeps gVisor's own buffer defaults (1 MiB, up to 4 MiB) instead.
	Defaults bool
	// Queue is the channel endpoint's outbound queue length (default 4096).
	Queue int
	// Inline delivers each frame in the sending goroutine (a channel.Notification that
	// injects into the peer, as gVisor's link/pipe does) instead of a pump goroutine.
	Inline bool
}

// gvisorPair is two gVisor netstacks (IPv4, ARP with static neighbours, TCP with SACK) on
// Ethernet over channel link endpoints, joined by two pump goroutines, one per direction,
// that copy each outbound frame into a new packet and inject it into the other stack.
type gvisorPair struct {
	stacks [2]*gstack.Stack
	chans  [2]*channel.Endpoint
	cancel context.CancelFunc
	pumps  sync.WaitGroup
	dirs   [2]*dirStats
}

func gAddr(i int) tcpip.Address {
	if i == 0 {
		return tcpip.AddrFrom4(ipA.As4())
	}
	return tcpip.AddrFrom4(ipB.As4())
}

func gMAC(i int) tcpip.LinkAddress {
	if i == 0 {
		return tcpip.LinkAddress(macA[:])
	}
	return tcpip.LinkAddress(macB[:])
}

func newGVisorPair(lossP float64, seed uint64, o GVisorOptions) (*gvisorPair, error) {
	if o.SendBuffer == 0 {
		o.SendBuffer = 256 << 10
	}
	if o.RecvBuffer == 0 {
		o.RecvBuffer = 512 << 10
	}
	if o.Queue == 0 {
		o.Queue = 4096
	}
	p := &gvisorPair{}
	for i := range 2 {
		s := gstack.New(gstack.Options{
			NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
			TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
		})
		sack := tcpip.TCPSACKEnabled(true)
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
			return nil, fmt.Errorf("gvisor: SACK: %s", err)
		}
		if !o.Defaults {
			snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: o.SendBuffer, Max: o.SendBuffer}
			rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: o.RecvBuffer, Max: o.RecvBuffer}
			if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd); err != nil {
				return nil, fmt.Errorf("gvisor: send buffer: %s", err)
			}
			if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
				return nil, fmt.Errorf("gvisor: receive buffer: %s", err)
			}
		}
		// The channel endpoint carries whole Ethernet frames; its MTU counts the header.
		ch := channel.New(o.Queue, 1500+header.EthernetMinimumSize, gMAC(i))
		if err := s.CreateNIC(1, ethernet.New(ch)); err != nil {
			return nil, fmt.Errorf("gvisor: NIC: %s", err)
		}
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: gAddr(i), PrefixLen: 24}}
		if err := s.AddProtocolAddress(1, pa, gstack.AddressProperties{}); err != nil {
			return nil, fmt.Errorf("gvisor: address: %s", err)
		}
		s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}})
		if err := s.AddStaticNeighbor(1, ipv4.ProtocolNumber, gAddr(1-i), gMAC(1-i)); err != nil {
			return nil, fmt.Errorf("gvisor: static neighbour: %s", err)
		}
		p.stacks[i], p.chans[i] = s, ch
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for dir := range 2 {
		p.dirs[dir] = &dirStats{}
		w := &gwire{src: p.chans[dir], dst: p.chans[1-dir], ls: newLoss(lossP, seed, dir), st: p.dirs[dir]}
		if o.Inline {
			p.chans[dir].AddNotify(w)
			continue
		}
		p.pumps.Add(1)
		go p.pump(ctx, p.chans[dir], p.chans[1-dir], newLoss(lossP, seed, dir), p.dirs[dir])
	}
	return p, nil
}

// gwire is one direction of the inline wire: WriteNotify runs in whichever goroutine wrote
// the packet, takes what is queued and delivers it to the peer in that goroutine.
type gwire struct {
	src, dst *channel.Endpoint
	mu       sync.Mutex // the loss stream; WriteNotify may run in several goroutines at once
	ls       *loss
	st       *dirStats
}

func (w *gwire) WriteNotify() {
	for {
		pkt := w.src.Read()
		if pkt == nil {
			return
		}
		v := pkt.ToView() // a copy of the frame
		pkt.DecRef()
		w.mu.Lock()
		drop := w.ls.drop()
		w.mu.Unlock()
		w.st.frames.Add(1)
		if drop {
			w.st.lost.Add(1)
			v.Release()
			continue
		}
		in := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		w.dst.InjectInbound(header.IPv4ProtocolNumber, in)
		in.DecRef()
	}
}

// pump copies frames from src's outbound queue into new packets injected into dst (so dst's
// inbound processing runs on this goroutine, as on a link endpoint's dispatch goroutine),
// losing some on purpose.
func (p *gvisorPair) pump(ctx context.Context, src, dst *channel.Endpoint, ls *loss, st *dirStats) {
	defer p.pumps.Done()
	var frames, lost uint64
	for {
		pkt := src.Read()
		if pkt == nil {
			st.frames.Store(frames)
			st.lost.Store(lost)
			if pkt = src.ReadContext(ctx); pkt == nil {
				return
			}
		}
		v := pkt.ToView() // a copy of the frame
		pkt.DecRef()
		frames++
		if ls.drop() {
			lost++
			v.Release()
			continue
		}
		in := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		dst.InjectInbound(header.IPv4ProtocolNumber, in)
		in.DecRef()
	}
}

func (p *gvisorPair) Listen(port uint16) (net.Listener, error) {
	return gonet.ListenTCP(p.stacks[1], tcpip.FullAddress{NIC: 1, Addr: gAddr(1), Port: port}, ipv4.ProtocolNumber)
}

func (p *gvisorPair) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	return gonet.DialContextTCP(ctx, p.stacks[0], tcpip.FullAddress{NIC: 1, Addr: gAddr(1), Port: port}, ipv4.ProtocolNumber)
}

func (p *gvisorPair) Wire() WireStats {
	w := sumWire(p.dirs[:])
	for _, s := range p.stacks {
		w.Overflow += s.NICInfo()[1].Stats.TxPacketsDroppedNoBufferSpace.Value()
	}
	return w
}

func (p *gvisorPair) Close() error {
	for _, s := range p.stacks {
		s.Close()
	}
	p.cancel()
	p.pumps.Wait()
	for i, s := range p.stacks {
		p.chans[i].Close()
		s.Wait()
	}
	return errors.Join()
}

func (p *gvisorPair) TCPStats() map[string]uint64 {
	out := map[string]uint64{}
	for _, s := range p.stacks {
		t := s.Stats().TCP
		for k, v := range map[string]*tcpip.StatCounter{"segments_out": t.SegmentsSent, "retransmits": t.Retransmits,
			"fast_retransmit": t.FastRetransmit, "fast_recovery": t.FastRecovery, "sack_recovery": t.SACKRecovery,
			"tlp_recovery": t.TLPRecovery, "slow_start_retransmits": t.SlowStartRetransmits, "timeouts": t.Timeouts,
			"spurious_rto_recovery": t.SpuriousRTORecovery, "spurious_recovery": t.SpuriousRecovery} {
			out[k] += v.Value()
		}
	}
	return out
}
