// Package rss finds out how a NIC steers flows to its receive queues (receive-side scaling), so
// that netchan's owner function can be the NIC's own hash: it reads the device's RSS settings
// through ethtool and turns them into a pipelines.RSS for the shards and the stack. A device
// without RSS (veth, virtio without the feature, lo) gets the software hash, and Detect says
// why.
//
//	r, why, err := rss.Detect("eth1", in.Queues())  // r nil: no usable RSS; why says which owner runs
//
// Only the Toeplitz hash without an input transform is modelled; a device with another hash
// function or with the symmetric-xor transform is reported and left to the software hash
// (the stack cannot predict its queues). Detect reads the settings once: call it again after
// `ethtool -X` changes them (the instance must restart its shards, since the owner of every
// connection moves).
package rss

import (
	"errors"
	"fmt"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/internal/ethtool"
)

// Detect reads iface's RSS settings. It returns the RSS to own flows by, with shard i owning
// queue queues[i], or nil when the device has none netchan can model; why says, in a line for
// doctor and status, what the device has and which owner function that leaves.
func Detect(iface string, queues []int) (r *pipelines.RSS, why string, err error) {
	c, err := ethtool.RSS(iface)
	if err != nil {
		return nil, "", fmt.Errorf("rss: reading the RSS settings of %s: %w", iface, err)
	}
	return fromConfig(c, queues)
}

func fromConfig(c ethtool.RSSConfig, queues []int) (*pipelines.RSS, string, error) {
	desc := ethtool.Describe(c)
	if !c.Supported {
		return nil, desc, nil
	}
	if c.HashFunc != "" && c.HashFunc != "toeplitz" {
		return nil, desc + ": netchan models only the Toeplitz hash, so the owner function is the software hash", nil
	}
	if c.InputXfrm != 0 {
		return nil, desc + ": netchan does not model the input transform, so the owner function is the software hash", nil
	}
	if len(c.Key) != 40 && len(c.Key) != 52 {
		return nil, fmt.Sprintf("%s: a %d-byte key is not a Toeplitz key netchan knows, so the owner function is the software hash", desc, len(c.Key)), nil
	}
	table := make(pipelines.RETA, len(c.Indir))
	for i, q := range c.Indir {
		table[i] = uint16(q)
	}
	r, err := pipelines.NewRSS(c.Key, table, queues, c.UDPPortsHashed(), "ethtool "+c.Iface)
	if err != nil {
		return nil, "", fmt.Errorf("rss: %s: %w", c.Iface, err)
	}
	if !c.TCPPortsHashed() {
		return nil, desc + ": TCP ports are not hashed, so the owner function is the software hash", nil
	}
	why := desc + ": the owner function is the NIC's Toeplitz hash"
	if !r.UDPPorts {
		why += " (UDP on addresses only: a source port cannot steer UDP replies)"
	}
	return r, why, nil
}

// ErrNoRSS: the device has no RSS to set (SetSymmetric).
var ErrNoRSS = ethtool.ErrNoRSS

// SetSymmetric makes iface hash both directions of a flow alike: the symmetric-xor input
// transform where the driver has it, else a symmetric Toeplitz key. Errors wrap ErrNoRSS on a
// device without RSS.
func SetSymmetric(iface string) error {
	if err := ethtool.SetSymmetricRSS(iface); err != nil {
		if errors.Is(err, ethtool.ErrNoRSS) {
			return fmt.Errorf("rss: %s has no RSS to make symmetric: %w", iface, err)
		}
		return fmt.Errorf("rss: %w", err)
	}
	return nil
}
