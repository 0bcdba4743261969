package trafficgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Engines that put frames on the wire.
const (
	// EngineAFXDP transmits through an AF_XDP socket per queue (copy mode on veth): every frame
	// becomes an skb in the sender's kernel, and the receiving side frees it, charging the
	// sender's socket across cores.
	EngineAFXDP = "afxdp"
	// EngineXDP runs an XDP program in live-frame mode (BPF_PROG_RUN with
	// BPF_F_TEST_XDP_LIVE_FRAMES, Linux ≥ 5.18) that returns XDP_TX: the kernel sends the frames
	// out of the interface as XDP frames, without skbs or a socket, several times faster than
	// AF_XDP copy mode. On veth they reach the peer's receive queue chosen by the sending CPU
	// (so one queue per sending core: Queues is ignored), and only if the peer has NAPI (an XDP
	// program or GRO). Frames are identical but for the source port (flow), rewritten with an
	// incrementally updated UDP checksum; their sequence numbers do not change (no Verify).
	// With a Rate the program paces itself, one frame per 1/Rate (see liveSpec), while the
	// sending core runs flat out.
	EngineXDP = "xdp"
)

const (
	liveProg    = "nc_live_tx"
	liveMap     = "nc_live"
	livePaceMap = "nc_live_pace"
	liveHdrMap  = "nc_live_hdr"
	// liveHdrLen is the part of the frame the program rewrites from liveHdrMap on every run:
	// Ethernet, IPv4 and UDP headers.
	liveHdrLen = 14 + 20 + 8
	// livePaceBurst is the paced program's burst: it sends that many frames back to back,
	// once per livePaceBurst intervals, as the AF_XDP engine sends bursts of 64. Evenly
	// spaced single frames would wake the receiver's NAPI thread for every frame (a NIC
	// moderates its interrupts instead), which costs the receiving core more than the frame.
	livePaceBurst = 64
)

// liveSpec: counter[0] += 1 per frame (the frames sent), the UDP source port becomes
// base + counter%flows with the checksum updated incrementally (RFC 1624), return XDP_TX.
// The one's-complement sum does not depend on byte order, so the program works on the raw
// (network order) 16-bit words.
//
// With interval > 0 (nanoseconds) the program paces itself: once the clock has reached the
// next burst's time (pace[0]) it sends livePaceBurst frames (pace[1] counts them down) and
// moves the time on by livePaceBurst intervals; other frames are dropped (XDP_DROP, not
// counted). So a caller that runs the program as fast as it can sends one frame per interval
// on average, however coarse its calls are. A burst more than one burst late (the gap
// between two calls) starts the schedule over from now.
func liveSpec(basePort uint16, flows int, interval uint64) *ebpf.CollectionSpec {
	if flows < 1 {
		flows = 1
	}
	r0, r1, r2, r3, r4, r6, r7, r8 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4, asm.R6, asm.R7, asm.R8
	const udp = 14 + 20
	insns := asm.Instructions{asm.Mov.Reg(r6, r1).WithSymbol(liveProg)}
	if interval > 0 {
		period := int32(min(interval*livePaceBurst, 1<<30)) // one burst's share of time
		insns = append(insns, lookupZero(livePaceMap, "count")...)
		insns = append(insns,
			asm.Mov.Reg(r8, r0),
			asm.LoadMem(r1, r8, 8, asm.DWord), // frames left in this burst
			asm.JEq.Imm(r1, 0, "when"),
			asm.Add.Imm(r1, -1),
			asm.StoreMem(r8, 8, r1, asm.DWord),
			asm.Ja.Label("count"),
			asm.FnKtimeGetNs.Call().WithSymbol("when"),
			asm.LoadMem(r1, r8, 0, asm.DWord),
			asm.JLT.Reg(r0, r1, "drop"), // the next burst is not due
			asm.Add.Imm(r1, period),
			asm.Mov.Reg(r2, r0),
			asm.Add.Imm(r2, -period),
			asm.JGE.Reg(r1, r2, "due"),
			asm.Mov.Reg(r1, r0), // more than a burst late (a gap between calls): start over
			asm.Add.Imm(r1, period),
			asm.StoreMem(r8, 0, r1, asm.DWord).WithSymbol("due"),
			asm.Mov.Imm(r1, livePaceBurst-1),
			asm.StoreMem(r8, 8, r1, asm.DWord),
		)
	}
	count := lookupZero(liveMap, "tx")
	count[0] = count[0].WithSymbol("count")
	insns = append(insns, count...)
	insns = append(insns,
		asm.LoadMem(r8, r0, 0, asm.DWord),
		asm.Mov.Reg(r1, r8),
		asm.Add.Imm(r1, 1),
		asm.StoreMem(r0, 0, r1, asm.DWord),
		asm.LoadMem(r7, r6, 0, asm.Word), // data
		asm.LoadMem(r2, r6, 4, asm.Word), // data_end
		asm.Mov.Reg(r3, r7),
		asm.Add.Imm(r3, udp+8),
		asm.JGT.Reg(r3, r2, "tx"),
	)
	// The headers afresh from hdr[0]: in live-frame mode a page comes back to the generator's
	// pool as the receiver left it, and a receiver that rewrites frames in place (a NAT, an
	// XDP program) would otherwise have the next frames go out rewritten.
	insns = append(insns, lookupZero(liveHdrMap, "tx")...)
	for off := int16(0); off < liveHdrLen; off += 2 {
		insns = append(insns,
			asm.LoadMem(r1, r0, off, asm.Half),
			asm.StoreMem(r7, off, r1, asm.Half),
		)
	}
	insns = append(insns,
		// r8 = new port in network order = htons(base + counter % flows)
		asm.Mod.Imm(r8, int32(flows)),
		asm.Add.Imm(r8, int32(basePort)),
		asm.HostTo(asm.BE, r8, asm.Half),
		asm.LoadMem(r1, r7, udp, asm.Half),   // old port
		asm.LoadMem(r2, r7, udp+6, asm.Half), // checksum
		asm.JEq.Imm(r2, 0, "store"),          // no checksum: nothing to update
		// sum = ~csum + ~old + new, folded, complemented.
		asm.Xor.Imm(r2, 0xffff),
		asm.Xor.Imm(r1, 0xffff),
		asm.Add.Reg(r2, r1),
		asm.Add.Reg(r2, r8),
		asm.Mov.Reg(r4, r2),
		asm.RSh.Imm(r4, 16),
		asm.And.Imm(r2, 0xffff),
		asm.Add.Reg(r2, r4),
		asm.Mov.Reg(r4, r2),
		asm.RSh.Imm(r4, 16),
		asm.And.Imm(r2, 0xffff),
		asm.Add.Reg(r2, r4),
		asm.Xor.Imm(r2, 0xffff),
		asm.JNE.Imm(r2, 0, "csum"),
		asm.Mov.Imm(r2, 0xffff), // a computed 0 is sent as 0xffff
		asm.StoreMem(r7, udp+6, r2, asm.Half).WithSymbol("csum"),
		asm.StoreMem(r7, udp, r8, asm.Half).WithSymbol("store"),
		asm.Mov.Imm(r0, 3).WithSymbol("tx"), // XDP_TX
		asm.Return(),
	)
	if interval > 0 {
		insns = append(insns,
			asm.Mov.Imm(r0, 1).WithSymbol("drop"), // XDP_DROP
			asm.Return(),
		)
	}
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			liveMap:     {Name: liveMap, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1},
			livePaceMap: {Name: livePaceMap, Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1},
			liveHdrMap:  {Name: liveHdrMap, Type: ebpf.Array, KeySize: 4, ValueSize: liveHdrLen + 6, MaxEntries: 1},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			liveProg: {Name: liveProg, Type: ebpf.XDP, License: "Dual MIT/GPL", Instructions: insns},
		},
	}
}

// errLiveRefused: the kernel refused the first live-frame run, before a frame went out (some
// kernels answer EPERM even to root, older ones EINVAL); Run then sends with AF_XDP instead.
var errLiveRefused = errors.New("the kernel refused XDP live frames (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES)")

// xdpMd is struct xdp_md, the context BPF_PROG_RUN takes for an XDP program.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// sendLive sends with EngineXDP: bursts of frames through BPF_PROG_RUN on the calling thread's
// CPU, at the configured rate, for the count or the duration.
func sendLive(ctx context.Context, c *Config, ifi *net.Interface, res *Result) error {
	var interval uint64
	if c.Rate > 0 {
		interval = uint64(time.Second) / uint64(c.Rate)
	}
	coll, err := ebpf.NewCollection(liveSpec(c.SrcPort, c.Flows, interval))
	if err != nil {
		return fmt.Errorf("trafficgen: loading the live-frame XDP program: %w", err)
	}
	defer coll.Close()
	frame := make([]byte, 2048)
	frame = frame[:c.Build(frame, 0)]
	// The program rewrites the source port: start from the first flow's.
	binary.BigEndian.PutUint16(frame[34:36], c.SrcPort)
	prog := coll.Programs[liveProg]
	ctr := coll.Maps[liveMap]
	hdr := make([]byte, liveHdrLen+6)
	copy(hdr, frame[:liveHdrLen])
	if err := coll.Maps[liveHdrMap].Update(uint32(0), hdr, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("trafficgen: the live-frame program's header template: %w", err)
	}
	sent := func() uint64 {
		var percpu []uint64
		if err := ctr.Lookup(uint32(0), &percpu); err != nil {
			return 0
		}
		var n uint64
		for _, v := range percpu {
			n += v
		}
		return n
	}
	md := &xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifi.Index)}
	// Calls long enough (about 50 ms at 5 Mpps) that the per-call setup (about 2 ms, during
	// which nothing is sent: the kernel sets up and tears down a page pool per call, measured
	// on 6.18) stays small. A paced program (Rate) drops the frames ahead of its schedule, so
	// its calls run the program many more times than they send: they are 4x longer.
	burst := uint32(1 << 18)
	if c.Rate > 0 {
		burst = 1 << 20
	}
	start := time.Now()
	end := time.Time{}
	if c.Duration > 0 {
		end = start.Add(c.Duration)
	}
	var runs uint64
	announced := !c.Announce
	for ctx.Err() == nil {
		done := sent()
		if c.Count > 0 && done >= c.Count {
			break
		}
		if !end.IsZero() && time.Now().After(end) {
			break
		}
		n := burst
		if c.Count > 0 && c.Count-done < uint64(n) {
			n = uint32(c.Count - done)
		}
		_, err := prog.Run(&ebpf.RunOptions{Data: frame, Repeat: n, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			Context: md, BatchSize: 64})
		if err != nil {
			if runs == 0 && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
				return fmt.Errorf("%w: %s: %w", errLiveRefused, c.Iface, err)
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("trafficgen: BPF_PROG_RUN in live-frame mode on %s: %w (needs Linux ≥ 5.18)", c.Iface, err)
			}
			return fmt.Errorf("trafficgen: BPF_PROG_RUN in live-frame mode on %s: %w", c.Iface, err)
		}
		runs++
		if !announced {
			fmt.Fprintln(os.Stderr, "trafficgen: sending")
			announced = true
		}
	}
	res.Sent = sent()
	return nil
}
