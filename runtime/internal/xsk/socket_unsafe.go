package xsk

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UMEM is a region of frames registered with the kernel. It is mapped anonymously and locked
// by the kernel on registration (charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK).
type UMEM struct {
	Mem       []byte
	FrameSize uint32
	NumFrames uint32
}

// MapUMEM maps numFrames*frameSize bytes of anonymous memory for a UMEM.
func MapUMEM(numFrames, frameSize uint32) (*UMEM, error) {
	size := int(numFrames) * int(frameSize)
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap UMEM of %d bytes: %w", size, err)
	}
	return &UMEM{Mem: mem, FrameSize: frameSize, NumFrames: numFrames}, nil
}

// Unmap releases the UMEM's memory; no socket may use it afterwards.
func (u *UMEM) Unmap() error {
	if u.Mem == nil {
		return nil
	}
	err := unix.Munmap(u.Mem)
	u.Mem = nil
	return err
}

// Socket is one AF_XDP socket with its mapped rings. Fill and Comp are nil on a socket that
// shares another socket's UMEM and was created without its own ring pair.
type Socket struct {
	FD   int
	Fill *AddrRing
	Comp *AddrRing
	Rx   *DescRing
	Tx   *DescRing
	maps [][]byte
}

// NewSocket opens an AF_XDP socket.
func NewSocket() (*Socket, error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &Socket{FD: fd}, nil
}

func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// RegisterUMEM registers u with this socket (the socket that owns the UMEM).
func (s *Socket) RegisterUMEM(u *UMEM) error {
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&u.Mem[0]))),
		Len:  uint64(len(u.Mem)),
		Size: u.FrameSize,
	}
	return setsockopt(s.FD, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg))
}

// RingSizes are the entry counts of the four rings; zero means the ring is not created.
type RingSizes struct{ Fill, Comp, Rx, Tx uint32 }

// SetupRings sizes the rings in the kernel and maps them into this process.
func (s *Socket) SetupRings(sz RingSizes) error {
	set := func(opt int, n uint32) error {
		if n == 0 {
			return nil
		}
		if err := setsockopt(s.FD, opt, unsafe.Pointer(&n), 4); err != nil {
			return fmt.Errorf("setsockopt %d size %d: %w", opt, n, err)
		}
		return nil
	}
	if err := set(unix.XDP_UMEM_FILL_RING, sz.Fill); err != nil {
		return err
	}
	if err := set(unix.XDP_UMEM_COMPLETION_RING, sz.Comp); err != nil {
		return err
	}
	if err := set(unix.XDP_RX_RING, sz.Rx); err != nil {
		return err
	}
	if err := set(unix.XDP_TX_RING, sz.Tx); err != nil {
		return err
	}
	var off unix.XDPMmapOffsets
	if err := getsockopt(s.FD, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return fmt.Errorf("getsockopt XDP_MMAP_OFFSETS: %w", err)
	}
	mapRing := func(o unix.XDPRingOffset, pgoff int64, n uint32, entSize uint64) ([]byte, error) {
		size := int(o.Desc + uint64(n)*entSize)
		m, err := unix.Mmap(s.FD, pgoff, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("mmap ring at %#x: %w", pgoff, err)
		}
		s.maps = append(s.maps, m)
		return m, nil
	}
	words := func(m []byte, o unix.XDPRingOffset) (prod, cons, flags *uint32) {
		return (*uint32)(unsafe.Pointer(&m[o.Producer])), (*uint32)(unsafe.Pointer(&m[o.Consumer])), (*uint32)(unsafe.Pointer(&m[o.Flags]))
	}
	if sz.Fill > 0 {
		m, err := mapRing(off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, sz.Fill, 8)
		if err != nil {
			return err
		}
		p, c, f := words(m, off.Fr)
		s.Fill = NewAddrRing(p, c, f, unsafe.Slice((*uint64)(unsafe.Pointer(&m[off.Fr.Desc])), sz.Fill))
	}
	if sz.Comp > 0 {
		m, err := mapRing(off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, sz.Comp, 8)
		if err != nil {
			return err
		}
		p, c, f := words(m, off.Cr)
		s.Comp = NewAddrRing(p, c, f, unsafe.Slice((*uint64)(unsafe.Pointer(&m[off.Cr.Desc])), sz.Comp))
	}
	if sz.Rx > 0 {
		m, err := mapRing(off.Rx, unix.XDP_PGOFF_RX_RING, sz.Rx, 16)
		if err != nil {
			return err
		}
		p, c, f := words(m, off.Rx)
		s.Rx = NewDescRing(p, c, f, unsafe.Slice((*Desc)(unsafe.Pointer(&m[off.Rx.Desc])), sz.Rx))
	}
	if sz.Tx > 0 {
		m, err := mapRing(off.Tx, unix.XDP_PGOFF_TX_RING, sz.Tx, 16)
		if err != nil {
			return err
		}
		p, c, f := words(m, off.Tx)
		s.Tx = NewDescRing(p, c, f, unsafe.Slice((*Desc)(unsafe.Pointer(&m[off.Tx.Desc])), sz.Tx))
	}
	return nil
}

// Bind binds the socket to ifindex/queue with flags (XDP_COPY, XDP_ZEROCOPY,
// XDP_USE_NEED_WAKEUP, or XDP_SHARED_UMEM with sharedFD).
func (s *Socket) Bind(ifindex, queue int, flags uint16, sharedFD int) error {
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if flags&unix.XDP_SHARED_UMEM != 0 {
		sa.SharedUmemFD = uint32(sharedFD)
	}
	return unix.Bind(s.FD, sa)
}

// Options reports whether the bound socket runs in zero-copy mode.
func (s *Socket) ZeroCopy() bool {
	var opts uint32
	if err := getsockopt(s.FD, unix.XDP_OPTIONS, unsafe.Pointer(&opts), 4); err != nil {
		return false
	}
	return opts&unix.XDP_OPTIONS_ZEROCOPY != 0
}

// Stats reads the kernel's per-socket counters.
func (s *Socket) Stats() (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	err := getsockopt(s.FD, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st))
	return st, err
}

// KickTx asks the kernel to transmit what the tx ring holds. EAGAIN, EBUSY and ENOBUFS mean
// "try again later" and are not errors here.
func (s *Socket) KickTx() error {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.FD), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
		return nil
	}
	return e
}

// KickRx asks the kernel to process the fill ring (used when it set need_wakeup on it).
func (s *Socket) KickRx() {
	unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.FD), 0, 0, unix.MSG_DONTWAIT, 0, 0)
}

// Close unmaps the rings and closes the socket.
func (s *Socket) Close() error {
	for _, m := range s.maps {
		unix.Munmap(m)
	}
	s.maps = nil
	s.Fill, s.Comp, s.Rx, s.Tx = nil, nil, nil, nil
	if s.FD < 0 {
		return nil
	}
	err := unix.Close(s.FD)
	s.FD = -1
	return err
}
