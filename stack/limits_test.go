package stack

import (
	"net/netip"
	"runtime"
)

// Tests of the limits a user sets (Config, TCPConfig) under attack: each drives traffic past
// one limit while other traffic goes on, and checks the drops are counted, by reason and in
// the stack's counters, and that the other traffic arrives whole. They are named TestLimit...

// listenUDP opens a UDP socket on the harness's host, stepping the harness until its stack has
// registered it (ListenUDP waits for the shards, which here run only when the test steps them).
func (hs *harness) listenUDP(laddr string) *UDPConn {
	hs.t.Helper()
	type result struct {
		c   *UDPConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := hs.h.ListenUDP(netip.MustParseAddrPort(laddr))
		done <- result{c, err}
	}()
	for {
		hs.step()
		select {
		case r := <-done:
			if r.err != nil {
				hs.t.Fatal(r.err)
			}
			return r.c
		default:
			runtime.Gosched()
		}
	}
}
