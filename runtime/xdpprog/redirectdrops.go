package xdpprog

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// RedirectDrops counts the frames that XDP redirects, the fast path's among them, lost on
// the way: a redirect the kernel refuses (xdp_redirect_err tracepoint: one frame each), and
// frames a devmap flush failed to transmit (xdp_devmap_xmit: its drops). Two small
// raw-tracepoint programs add them up. Such frames are lost without a trace in the
// interfaces' own counters; the usual cause is a veth whose peer runs no NAPI (neither an
// XDP program nor GRO), which refuses every frame redirected into it. The count covers
// every XDP redirect on the host, not only netchan's; Refused counts only the redirects
// refused through the devmaps passed to Watch, such as a Program's fast path.
type RedirectDrops struct {
	mu    sync.Mutex
	coll  *ebpf.Collection
	links []link.Link
}

const (
	mapRedirectDrops   = "nc_redir_drops"
	mapWatchedDevmaps  = "nc_redir_watch"
	maxWatchedDevmaps  = 64
	progDevmapXmitDrop = "nc_devmap_drops"
	progRedirectErr    = "nc_redirect_err"
	// xdp_devmap_xmit(from_dev, to_dev, sent, drops, err): drops is the fourth argument.
	rawArgDrops = 3 * 8
	// xdp_redirect_err(dev, xdp, tgt, err, map_type, map_id, index): map_id is the sixth.
	rawArgMapID = 5 * 8
	// Slots of the counter array.
	slotDrops   = 0
	slotRefused = 1
)

// addTo emits: counter[slot] += r2 on this CPU, skipped when r2 is 0; label names its end.
// Clobbers r0-r5 and fp-16..fp-1: a caller that needs its context after keeps it in r6.
func addTo(slot int32, label string) asm.Instructions {
	r0, r1, r2 := asm.R0, asm.R1, asm.R2
	return asm.Instructions{
		asm.JEq.Imm(r2, 0, label),
		asm.StoreMem(asm.RFP, -8, r2, asm.DWord),
		asm.StoreImm(asm.RFP, -12, int64(slot), asm.Word),
		asm.LoadMapPtr(r1, 0).WithReference(mapRedirectDrops),
		asm.Mov.Reg(r2, asm.RFP),
		asm.Add.Imm(r2, -12),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, label),
		asm.LoadMem(r1, r0, 0, asm.DWord),
		asm.LoadMem(r2, asm.RFP, -8, asm.DWord),
		asm.Add.Reg(r1, r2),
		asm.StoreMem(r0, 0, r1, asm.DWord),
		asm.Mov.Imm(r0, 0).WithSymbol(label),
	}
}

// devmapXmitProg adds each flush's drops to the drops counter.
func devmapXmitProg() asm.Instructions {
	insns := asm.Instructions{asm.LoadMem(asm.R2, asm.R1, rawArgDrops, asm.Word).WithSymbol(progDevmapXmitDrop)}
	insns = append(insns, addTo(slotDrops, "done")...)
	return append(insns, asm.Return())
}

// redirectErrProg counts a refused redirect as one drop and, if it went through a watched
// devmap, as one refusal.
func redirectErrProg() asm.Instructions {
	r0, r1, r2 := asm.R0, asm.R1, asm.R2
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, r1).WithSymbol(progRedirectErr),
		asm.Mov.Imm(r2, 1),
	}
	insns = append(insns, addTo(slotDrops, "counted")...)
	insns = append(insns,
		asm.LoadMem(r1, asm.R6, rawArgMapID, asm.Word),
		asm.StoreMem(asm.RFP, -4, r1, asm.Word),
		asm.LoadMapPtr(r1, 0).WithReference(mapWatchedDevmaps),
		asm.Mov.Reg(r2, asm.RFP),
		asm.Add.Imm(r2, -4),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(r2, 0),
		asm.JEq.Imm(r0, 0, "unwatched"),
		asm.Mov.Imm(r2, 1),
		asm.Mov.Imm(r0, 0).WithSymbol("unwatched"),
	)
	insns = append(insns, addTo(slotRefused, "done")...)
	return append(insns, asm.Return())
}

// WatchRedirectDrops loads the counting program and attaches it to the tracepoint; Close
// detaches it.
func WatchRedirectDrops() (*RedirectDrops, error) {
	prog := func(name string, insns asm.Instructions) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Name: name, Type: ebpf.RawTracepoint, License: "Dual MIT/GPL", Instructions: insns}
	}
	spec := &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			mapRedirectDrops:  {Name: mapRedirectDrops, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2},
			mapWatchedDevmaps: {Name: mapWatchedDevmaps, Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: maxWatchedDevmaps},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			progDevmapXmitDrop: prog(progDevmapXmitDrop, devmapXmitProg()),
			progRedirectErr:    prog(progRedirectErr, redirectErrProg()),
		},
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("xdpprog: the kernel verifier rejected the redirect-drop counter (a netchan bug): %+v", verr)
		}
		return nil, wrapPerm("loading the redirect-drop counter", err)
	}
	r := &RedirectDrops{coll: coll}
	for tp, p := range map[string]string{"xdp_devmap_xmit": progDevmapXmitDrop, "xdp_redirect_err": progRedirectErr} {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: coll.Programs[p]})
		if err != nil {
			return nil, errors.Join(wrapPerm("attaching the redirect-drop counter to the "+tp+" tracepoint", err), r.Close())
		}
		r.links = append(r.links, l)
	}
	return r, nil
}

// Count returns the frames dropped since WatchRedirectDrops.
func (r *RedirectDrops) Count() (uint64, error) { return r.read(slotDrops) }

// Refused returns the redirects refused through watched devmaps (Watch) since they were
// watched.
func (r *RedirectDrops) Refused() (uint64, error) { return r.read(slotRefused) }

// Watch makes Refused count the redirects that p's fast path has refused.
func (r *RedirectDrops) Watch(p *Program) error {
	id, err := p.fastDevmapID()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.coll == nil {
		return ErrClosed
	}
	if err := r.coll.Maps[mapWatchedDevmaps].Update(uint32(id), uint32(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("xdpprog: watching devmap %d: %w", id, err)
	}
	return nil
}

func (r *RedirectDrops) read(slot uint32) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.coll == nil {
		return 0, ErrClosed
	}
	var percpu []uint64
	if err := r.coll.Maps[mapRedirectDrops].Lookup(slot, &percpu); err != nil {
		return 0, fmt.Errorf("xdpprog: reading the redirect-drop counter: %w", err)
	}
	var n uint64
	for _, v := range percpu {
		n += v
	}
	return n, nil
}

// Close detaches and unloads the counter; calling it again returns nil.
func (r *RedirectDrops) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.coll == nil {
		return nil
	}
	var err error
	for _, l := range r.links {
		err = errors.Join(err, l.Close())
	}
	r.coll.Close()
	r.coll = nil
	return err
}
