package stack

import (
	"sync"
	"testing"
)

// TestNeighborTableConcurrent has writers on two goroutines and readers on two more (run with
// -race): a reader sees either no entry or a MAC that some writer wrote for that address.
func TestNeighborTableConcurrent(t *testing.T) {
	nt := NewNeighborTable(64)
	macFor := func(ip [4]byte, gen byte) [6]byte { return [6]byte{0x02, ip[2], ip[3], gen, gen, gen} }
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				ip := [4]byte{198, 18, byte(i % 3), byte(i % 97)}
				nt.Update(ip, macFor(ip, byte(w)), int64(i), false)
			}
		}(w)
	}
	errs := make(chan string, 2)
	for r := 0; r < 2; r++ {
		go func() {
			for {
				select {
				case <-stop:
					errs <- ""
					return
				default:
				}
				for i := 0; i < 291; i++ {
					ip := [4]byte{198, 18, byte(i % 3), byte(i % 97)}
					if mac, ok := nt.Lookup(ip, 0); ok && mac != macFor(ip, 0) && mac != macFor(ip, 1) {
						errs <- "torn or foreign entry"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	for r := 0; r < 2; r++ {
		if e := <-errs; e != "" {
			t.Fatal(e)
		}
	}
	// A static entry is not replaced by a learned one.
	ip := [4]byte{198, 18, 9, 9}
	nt.Update(ip, [6]byte{1}, 0, true)
	nt.Update(ip, [6]byte{2}, 0, false)
	if mac, ok := nt.Lookup(ip, 1<<62); !ok || mac != [6]byte{1} {
		t.Fatalf("static entry %v %v", mac, ok)
	}
}
