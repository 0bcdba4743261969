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
// every XDP redirect on the host, not only netchan's.
type RedirectDrops struct {
	mu    sync.Mutex
	coll  *ebpf.Collection
	links []link.Link
}

const (
	mapRedirectDrops   = "nc_redir_drops"
	progDevmapXmitDrop = "nc_devmap_drops"
	progRedirectErr    = "nc_redirect_err"
	// xdp_devmap_xmit(from_dev, to_dev, sent, drops, err): drops is the fourth argument.
	rawArgDrops = 3 * 8
)

// countDrops emits a raw-tracepoint program named name that adds r2 (set by pre, from the
// context in r1) to the counter.
func countDrops(name string, pre ...asm.Instruction) asm.Instructions {
	r0, r1, r2 := asm.R0, asm.R1, asm.R2
	done := name + "_done"
	pre[0] = pre[0].WithSymbol(name)
	return append(asm.Instructions(pre),
		asm.JEq.Imm(r2, 0, done),
		asm.StoreMem(asm.RFP, -8, r2, asm.DWord),
		asm.StoreImm(asm.RFP, -12, 0, asm.Word),
		asm.LoadMapPtr(r1, 0).WithReference(mapRedirectDrops),
		asm.Mov.Reg(r2, asm.RFP),
		asm.Add.Imm(r2, -12),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, done),
		asm.LoadMem(r1, r0, 0, asm.DWord),
		asm.LoadMem(r2, asm.RFP, -8, asm.DWord),
		asm.Add.Reg(r1, r2),
		asm.StoreMem(r0, 0, r1, asm.DWord),
		asm.Mov.Imm(r0, 0).WithSymbol(done),
		asm.Return(),
	)
}

// WatchRedirectDrops loads the counting program and attaches it to the tracepoint; Close
// detaches it.
func WatchRedirectDrops() (*RedirectDrops, error) {
	prog := func(name string, insns asm.Instructions) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Name: name, Type: ebpf.RawTracepoint, License: "Dual MIT/GPL", Instructions: insns}
	}
	spec := &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			mapRedirectDrops: {Name: mapRedirectDrops, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			progDevmapXmitDrop: prog(progDevmapXmitDrop, countDrops(progDevmapXmitDrop, asm.LoadMem(asm.R2, asm.R1, rawArgDrops, asm.Word))),
			progRedirectErr:    prog(progRedirectErr, countDrops(progRedirectErr, asm.Mov.Imm(asm.R2, 1))),
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
func (r *RedirectDrops) Count() (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.coll == nil {
		return 0, ErrClosed
	}
	var percpu []uint64
	if err := r.coll.Maps[mapRedirectDrops].Lookup(uint32(0), &percpu); err != nil {
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
