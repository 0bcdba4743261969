package pipelines

import (
	"fmt"

	"github.com/netchan/netchan/stack/header"
)

// RSS is a NIC's receive-side scaling as the shards see it: the Toeplitz key and indirection
// table the NIC steers with, which header fields it hashes, and which shard owns each queue.
// Where a device has RSS, its Owner is the owner function: a packet's shard is the one whose
// queue the NIC steers its flow to, so packets arrive at their owner and nothing is handed off,
// and a connection netchan opens picks its source port so that the replies do too
// (Toeplitz.PickSourcePort). The software hash (OwnerByFlow) is for devices without RSS.
type RSS struct {
	Hash  *Toeplitz
	Table RETA
	// QueueShard maps a queue to the shard that owns it (-1 or past the end: none).
	QueueShard []int
	// UDPPorts says the NIC hashes UDP on ports as well as addresses; many NICs hash UDP on
	// addresses only by default, and then a source port cannot steer UDP replies.
	UDPPorts bool
	// Source says where the figures came from, for doctor and status ("ethtool eth1",
	// "lab emulation").
	Source string
}

// NewRSS builds the RSS of a device with Toeplitz key key and indirection table table, whose
// shard i owns queue queues[i] (Instance.Queues()).
func NewRSS(key []byte, table RETA, queues []int, udpPorts bool, source string) (*RSS, error) {
	tz, err := NewToeplitz(key)
	if err != nil {
		return nil, err
	}
	if len(table) == 0 {
		return nil, fmt.Errorf("pipelines: RSS without an indirection table")
	}
	maxQ := 0
	for _, q := range table {
		maxQ = max(maxQ, int(q))
	}
	qs := make([]int, maxQ+1)
	for i := range qs {
		qs[i] = -1
	}
	for shard, q := range queues {
		if q >= 0 && q < len(qs) {
			qs[q] = shard
		}
	}
	return &RSS{Hash: tz, Table: table, QueueShard: qs, UDPPorts: udpPorts, Source: source}, nil
}

// Queue is the receive queue the NIC steers a packet from src:sport to dst:dport to; ports
// false hashes the addresses only (fragments, protocols without ports, UDP on many NICs).
func (r *RSS) Queue(src, dst [4]byte, sport, dport uint16, ports bool) int {
	var h uint32
	if ports {
		h = r.Hash.HashIPv4Ports(src, dst, sport, dport)
	} else {
		h = r.Hash.HashIPv4(src, dst)
	}
	return r.Table.Queue(h)
}

// ShardOf is the shard that receives a packet from src:sport to dst:dport (-1: no shard owns
// its queue).
func (r *RSS) ShardOf(src, dst [4]byte, sport, dport uint16, ports bool) int {
	q := r.Queue(src, dst, sport, dport, ports)
	if q < len(r.QueueShard) {
		return r.QueueShard[q]
	}
	return -1
}

// Owner is an OwnerFunc: the shard whose queue the NIC steers the packet's flow to. TCP (and
// UDP when the NIC hashes its ports) is hashed with its ports unless the packet is a fragment;
// other IPv4 on its addresses; anything else stays where it arrived.
func (r *RSS) Owner(data []byte, shards int) int {
	ip, ok := header.IPv4InFrame(data)
	if !ok || shards <= 1 {
		return -1
	}
	src, dst := [4]byte(ip[12:16]), [4]byte(ip[16:20])
	proto := ip.Protocol()
	if !ip.IsFragment() && (proto == header.ProtoTCP || proto == header.ProtoUDP && r.UDPPorts) {
		if sp, dp, ok := ip.Ports(); ok {
			return r.ShardOf(src, dst, sp, dp, true)
		}
	}
	return r.ShardOf(src, dst, 0, 0, false)
}

// String says what the RSS is, for doctor and status.
func (r *RSS) String() string {
	udp := "UDP on addresses only"
	if r.UDPPorts {
		udp = "UDP ports hashed"
	}
	return fmt.Sprintf("Toeplitz RSS (%s), %d-entry table, %s", r.Source, len(r.Table), udp)
}
