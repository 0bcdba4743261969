package main

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// TestConnConformance runs x/net's net.Conn conformance suite (basic I/O, racing reads and
// writes, read and write deadlines in the past, present and future, deadlines that move or
// are cleared while a call blocks, Close unblocking calls, concurrent methods) on a connection
// of each stack: netchan's TCPConn must behave as a net.Conn, as gVisor's gonet.TCPConn does.
func TestConnConformance(t *testing.T) {
	for _, name := range []string{"netchan", "gvisor"} {
		t.Run(name, func(t *testing.T) {
			p, err := newPair(Options{Wire: "pump"}, name, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := p.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			l, err := p.Listen(5003)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				accepted := make(chan net.Conn, 1)
				acceptErr := make(chan error, 1)
				go func() {
					c, err := l.Accept()
					if err != nil {
						acceptErr <- err
						return
					}
					accepted <- c
				}()
				if c1, err = p.Dial(ctx, 5003); err != nil {
					return nil, nil, nil, err
				}
				select {
				case c2 = <-accepted:
				case err = <-acceptErr:
					c1.Close()
					return nil, nil, nil, err
				}
				return c1, c2, func() { c1.Close(); c2.Close() }, nil
			})
		})
	}
}
