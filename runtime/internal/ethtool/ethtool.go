// Package ethtool reads and changes a network device's offload features through the ethtool
// ioctl (SIOCETHTOOL: ETHTOOL_GSSET_INFO and ETHTOOL_GSTRINGS for the kernel's feature names,
// ETHTOOL_GFEATURES and ETHTOOL_SFEATURES for their state), so that netchan needs no ethtool
// binary. The one syscall and the unsafe it needs live in ioctl_unsafe.go.
//
// A device is named in the network namespace of the calling process (the socket the ioctl goes
// through belongs to the namespace it was created in). To act on a device in another namespace,
// run a process there (`ip netns exec NS ...`), or set the features before the device is moved
// into it: a device keeps its features when it changes namespace.
//
// Features are named by the words of `ethtool -k/-K` (Offloads): each stands for a group of the
// kernel's feature names, as in ethtool's own table. A word is on when any feature of its group
// is active.
//
// RSS reads a device's receive-side scaling (hash function, input transform, key, indirection
// table, rx rings, the header fields hashed for TCP/IPv4 and UDP/IPv4), SetSymmetricRSS makes
// its hash symmetric, and Describe sums it up in a line (rss.go). A device without RSS (veth:
// the kernel answers EOPNOTSUPP) reads as Supported false with the reason. No machine this
// was developed on has a NIC with RSS: the no-RSS path is tested on veth, the decoding of an
// RSS device's reply only against byte layouts built from the kernel's uapi headers.
package ethtool

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
)

// An Offload is one of `ethtool -K`'s words and the `ethtool -k` line that shows it.
type Offload struct {
	Word    string // as `ethtool -K` takes it: "tx"
	Name    string // as `ethtool -k` prints it: "tx-checksumming"
	pattern string // the kernel features it stands for (path.Match syntax)
}

// Offloads lists the words this package knows, in `ethtool -k`'s order.
var Offloads = []Offload{
	{"rx", "rx-checksumming", "rx-checksum"},
	{"tx", "tx-checksumming", "tx-checksum-*"},
	{"sg", "scatter-gather", "tx-scatter-gather*"},
	{"tso", "tcp-segmentation-offload", "tx-tcp*-segmentation"},
	{"gso", "generic-segmentation-offload", "tx-generic-segmentation"},
	{"gro", "generic-receive-offload", "rx-gro"},
	{"lro", "large-receive-offload", "rx-lro"},
}

// ErrUnknownWord is returned (wrapped) for a word that is not in Offloads.
var ErrUnknownWord = errors.New("ethtool: unknown offload word")

// ErrNotChanged is returned (wrapped) when the device did not take a change: the word's
// features are fixed on this device.
var ErrNotChanged = errors.New("ethtool: the device did not take the change")

func (o Offload) matches(feature string) bool {
	ok, _ := path.Match(o.pattern, feature)
	return ok
}

func lookup(word string) (Offload, error) {
	for _, o := range Offloads {
		if o.Word == word || o.Name == word {
			return o, nil
		}
	}
	return Offload{}, fmt.Errorf("%w %q", ErrUnknownWord, word)
}

// Feature is the state of one kernel feature (a bit of netdev_features_t).
type Feature struct {
	Available bool // the device lets it be changed (hw_features)
	Requested bool // wanted by the user
	Active    bool // in effect
	Fixed     bool // never changeable on this device
}

// Features returns the state of every kernel feature of iface, by the kernel's name
// ("tx-checksum-ip-generic", "rx-gro", ...).
func Features(iface string) (map[string]Feature, error) {
	s, err := open()
	if err != nil {
		return nil, err
	}
	defer s.close()
	names, blocks, err := s.features(iface)
	if err != nil {
		return nil, err
	}
	m := make(map[string]Feature, len(names))
	for i, name := range names {
		if name == "" {
			continue
		}
		b := blocks[i/32]
		bit := uint32(1) << (i % 32)
		m[name] = Feature{Available: b.available&bit != 0, Requested: b.requested&bit != 0,
			Active: b.active&bit != 0, Fixed: b.neverChanged&bit != 0}
	}
	return m, nil
}

// Get returns each word of Offloads (by its `ethtool -k` name, "tx-checksumming") that iface has
// features for, and whether it is on.
func Get(iface string) (map[string]bool, error) {
	feats, err := Features(iface)
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, o := range Offloads {
		for name, f := range feats {
			if o.matches(name) {
				m[o.Name] = m[o.Name] || f.Active
			}
		}
	}
	return m, nil
}

// Set turns the offloads named by words (`ethtool -K` words such as "tx", "tso", "gso", "gro",
// or their `ethtool -k` names) on or off on iface, as `ethtool -K iface tx off ...` does, and
// checks that the device took the change: a word turned off must have no active feature left,
// a word turned on at least one.
func Set(iface string, words map[string]bool) error {
	offs := make([]Offload, 0, len(words))
	keys := make([]string, 0, len(words))
	for w := range words {
		keys = append(keys, w)
	}
	sort.Strings(keys)
	for _, w := range keys {
		o, err := lookup(w)
		if err != nil {
			return err
		}
		offs = append(offs, o)
	}
	s, err := open()
	if err != nil {
		return err
	}
	defer s.close()
	names, blocks, err := s.features(iface)
	if err != nil {
		return err
	}
	set := make([]setBlock, len(blocks))
	for i, w := range keys {
		on := words[w]
		for bit, name := range names {
			if !offs[i].matches(name) {
				continue
			}
			b := &set[bit/32]
			m := uint32(1) << (bit % 32)
			if on && blocks[bit/32].available&m == 0 {
				continue // not changeable: asking for it only makes the kernel complain
			}
			b.valid |= m
			if on {
				b.requested |= m
			} else {
				b.requested &^= m
			}
		}
	}
	if err := s.setFeatures(iface, set); err != nil {
		return fmt.Errorf("ethtool: setting features of %s: %w", iface, err)
	}
	_, after, err := s.features(iface)
	if err != nil {
		return err
	}
	var wrong []string
	for i, w := range keys {
		on, any := words[w], false
		for bit, name := range names {
			if offs[i].matches(name) && after[bit/32].active&(1<<(bit%32)) != 0 {
				any = true
			}
		}
		if any != on {
			wrong = append(wrong, fmt.Sprintf("%s %s", offs[i].Word, onOff(any)))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("%w: %s is still %s", ErrNotChanged, iface, strings.Join(wrong, ", "))
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// getBlock is struct ethtool_get_features_block; setBlock is struct ethtool_set_features_block.
type getBlock struct{ available, requested, active, neverChanged uint32 }
type setBlock struct{ valid, requested uint32 }

// features returns the kernel's feature names (index = bit) and their state.
func (s sock) features(iface string) ([]string, []getBlock, error) {
	names, err := s.featureNames(iface)
	if err != nil {
		return nil, nil, fmt.Errorf("ethtool: feature names of %s: %w", iface, err)
	}
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("ethtool: %s reports no features", iface)
	}
	blocks, err := s.getFeatures(iface, (len(names)+31)/32)
	if err != nil {
		return nil, nil, fmt.Errorf("ethtool: features of %s: %w", iface, err)
	}
	return names, blocks, nil
}
