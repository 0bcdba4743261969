package stack

import (
	"netchan/pipelines/stage"
	"netchan/stack/header"
)

// ReasonNoTCP counts TCP segments while the stack has no TCP (it arrives with part 2).
var ReasonNoTCP = stage.RegisterReason("no-tcp")

// tcpInput handles a TCP segment addressed to us.
func (s *Stack) tcpInput(b *stage.Batch, i int, ip header.IPv4, now int64) {
	b.Drop(i, ReasonNoTCP)
}

// tcpOriginate sends what TCP has to send (retransmissions, ACKs, socket writes).
func (s *Stack) tcpOriginate(b *stage.Batch, now int64) {}

// tcpDeadline is TCP's next timer (0: none).
func (s *Stack) tcpDeadline() int64 { return 0 }
