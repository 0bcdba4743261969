package trafficgen

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// Counter is a tiny XDP program that counts every IPv4 frame (packets and bytes, per CPU) and
// drops it with XDP_DROP; anything else (ARP) goes to the kernel. The generator attaches it to
// its own interface to count replies without a kernel stack behind them (CountReplies), and the
// benchmark attaches it to the receiving interface as the in-kernel XDP_DROP ceiling. It is
// attached through a bpf_link, so the kernel removes it when the process dies.
type Counter struct {
	coll *ebpf.Collection
	lnk  link.Link
}

const (
	counterProg = "nc_count_drop"
	counterMap  = "nc_count"
)

// lookupZero looks up key 0 of the array map m: r0 is the value, or the program jumps to miss
// when there is none. The key is stored at fp-4; r1-r5 are clobbered.
func lookupZero(m, miss string) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(m),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, miss),
	}
}

// counterSpec: r6 = ctx; counters[0] += 1, counters[1] += frame length for each IPv4 frame.
func counterSpec() *ebpf.CollectionSpec {
	r0, r1, r2, r3, r6, r7, r8 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R6, asm.R7, asm.R8
	insns := asm.Instructions{
		asm.Mov.Reg(r6, r1).WithSymbol(counterProg),
		asm.LoadMem(r7, r6, 0, asm.Word), // data
		asm.LoadMem(r8, r6, 4, asm.Word), // data_end
		asm.Mov.Reg(r2, r7),
		asm.Add.Imm(r2, 14),
		asm.JGT.Reg(r2, r8, "pass"),
		asm.LoadMem(r2, r7, 12, asm.Half),
		asm.HostTo(asm.BE, r2, asm.Half),
		asm.JNE.Imm(r2, 0x0800, "pass"),
	}
	insns = append(insns, lookupZero(counterMap, "drop")...)
	insns = append(insns,
		asm.LoadMem(r1, r0, 0, asm.DWord),
		asm.Add.Imm(r1, 1),
		asm.StoreMem(r0, 0, r1, asm.DWord),
		asm.Mov.Reg(r3, r8),
		asm.Sub.Reg(r3, r7),
		asm.LoadMem(r1, r0, 8, asm.DWord),
		asm.Add.Reg(r1, r3),
		asm.StoreMem(r0, 8, r1, asm.DWord),
		asm.Mov.Imm(r0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
		asm.Mov.Imm(r0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	)
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			counterMap: {Name: counterMap, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: 1},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			counterProg: {Name: counterProg, Type: ebpf.XDP, License: "Dual MIT/GPL", Instructions: insns},
		},
	}
}

// AttachCounter loads the counter and attaches it to the interface with this index in the
// calling process's network namespace, in native (driver) mode, or generic mode if generic.
func AttachCounter(ifindex int, generic bool) (*Counter, error) {
	coll, err := ebpf.NewCollection(counterSpec())
	if err != nil {
		return nil, fmt.Errorf("trafficgen: loading the counting XDP program: %w", err)
	}
	flags := link.XDPDriverMode
	if generic {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: coll.Programs[counterProg], Interface: ifindex, Flags: flags})
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("trafficgen: attaching the counting XDP program to ifindex %d: %w (is another XDP program attached?)", ifindex, err)
	}
	return &Counter{coll: coll, lnk: l}, nil
}

// Count returns the IPv4 frames and bytes counted so far, summed over CPUs.
func (c *Counter) Count() (packets, bytes uint64, err error) {
	if c == nil || c.coll == nil {
		return 0, 0, errors.New("trafficgen: counter closed")
	}
	var percpu [][2]uint64
	if err := c.coll.Maps[counterMap].Lookup(uint32(0), &percpu); err != nil {
		return 0, 0, fmt.Errorf("trafficgen: reading the counter: %w", err)
	}
	for _, v := range percpu {
		packets += v[0]
		bytes += v[1]
	}
	return packets, bytes, nil
}

// Close detaches the program and frees it.
func (c *Counter) Close() error {
	if c == nil || c.coll == nil {
		return nil
	}
	err := c.lnk.Close()
	c.coll.Close()
	c.coll = nil
	return err
}
