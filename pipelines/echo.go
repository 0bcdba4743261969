package pipelines

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"netchan/pipelines/stage"
	"netchan/stack"
)

// Echo is the bundled echo service set on netchan's stack: ICMP echo (answered by the stack
// itself) and UDP echo on port 7 (a net.PacketConn served by a goroutine).
type Echo struct {
	Host *stack.Host
	udp  *stack.UDPConn
}

// NewEcho builds the stack for cfg.
func NewEcho(cfg stack.Config) (*Echo, error) {
	h, err := stack.NewHost(cfg)
	if err != nil {
		return nil, err
	}
	return &Echo{Host: h}, nil
}

// Spec is the pipeline to run: the stack on every shard, claiming our addresses and ARP for
// them, with fragments steered to one shard for reassembly.
func (e *Echo) Spec() Spec {
	return Spec{
		Name:   "echo",
		New:    func(shard int) *stage.Pipeline { return &stage.Pipeline{Stages: []stage.Stage{e.Host.NewStack(shard)}} },
		Claims: e.Host.Claims(),
		Owner:  e.Host.Owner,
	}
}

// Serve answers UDP echo on port 7 until ctx is done.
func (e *Echo) Serve(ctx context.Context) error {
	c, err := e.Host.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), 7))
	if err != nil {
		return err
	}
	e.udp = c
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if _, err := c.WriteToUDPAddrPort(buf[:n], from); err != nil && errors.Is(err, net.ErrClosed) {
			return nil
		}
	}
}
