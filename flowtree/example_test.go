package flowtree_test

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/netchan/netchan/flowtree"
)

func Example() {
	t := flowtree.New(3)
	local := netip.MustParseAddr("198.18.0.1")
	t.InsertListener(6, netip.Addr{}, 80, 1) // TCP port 80 on any address
	t.Insert(flowtree.Key{
		Proto:      6,
		LocalAddr:  local,
		RemoteAddr: netip.MustParseAddr("198.18.1.9"),
		LocalPort:  80,
		RemotePort: 40000,
	}, 2)

	// The fast path passes addresses as they sit in the IPv4 header.
	h, ok := t.Lookup(6, local.As4(), [4]byte{198, 18, 1, 9}, 80, 40000)
	fmt.Println("established:", h, ok)
	h, ok = t.Lookup(6, local.As4(), [4]byte{198, 18, 1, 10}, 80, 40000)
	fmt.Println("new connection:", h, ok)

	// A NAT mapping is two entries; only one more fits.
	err := t.Insert(flowtree.Key{Proto: 17, LocalAddr: local, RemoteAddr: local, LocalPort: 1, RemotePort: 2}, 3)
	fmt.Println(err)
	err = t.Insert(flowtree.Key{Proto: 17, LocalAddr: local, RemoteAddr: local, LocalPort: 2, RemotePort: 1}, 4)
	fmt.Println(errors.Is(err, flowtree.ErrFull))

	t.AscendPrefix(6, netip.MustParsePrefix("198.18.0.0/24"), func(k flowtree.Key, h flowtree.Handle) bool {
		fmt.Println(k, h)
		return true
	})
	// Output:
	// established: 2 true
	// new connection: 1 true
	// <nil>
	// true
	// 6 198.18.0.1:80<-198.18.1.9:40000 2
}
