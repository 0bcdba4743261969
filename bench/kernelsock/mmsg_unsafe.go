package kernelsock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgs is a vector of messages for recvmmsg(2)/sendmmsg(2): one buffer and one IPv4 source
// address per message. x/sys/unix has the types but not the calls.
type mmsgs struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	bufs  []byte
	size  int
}

func newMmsgs(n, size int) *mmsgs {
	m := &mmsgs{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet4, n), bufs: make([]byte, n*size), size: size}
	for i := range m.hdrs {
		m.iovs[i].Base = &m.bufs[i*size]
		m.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.Iovlen = 1
	}
	return m
}

// recv receives up to len(hdrs) datagrams; with MSG_WAITFORONE it blocks for the first only.
func (m *mmsgs) recv(fd int, flags int) (int, error) {
	for i := range m.hdrs {
		m.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		m.iovs[i].SetLen(m.size)
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(len(m.hdrs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sendBack sends datagrams from..n-1 to the addresses they came from, with the lengths they
// arrived with; it returns how many the kernel took.
func (m *mmsgs) sendBack(fd int, from, n int) (int, error) {
	for i := from; i < n; i++ {
		m.iovs[i].SetLen(int(m.hdrs[i].Len))
	}
	k, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[from])), uintptr(n-from), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(k), nil
}
