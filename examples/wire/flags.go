package wire

import (
	"flag"
	"fmt"
	"net/netip"
)

// Flags are the flags every program in the wire takes: its two interfaces and its gateway
// address on each.
type Flags struct {
	inside, outside, insideAddr, outsideAddr *string
}

// RegisterFlags adds --inside, --outside, --inside-addr and --outside-addr to fs (the lab's nat
// layout gives the addresses' defaults).
func RegisterFlags(fs *flag.FlagSet) *Flags {
	return &Flags{
		inside:      fs.String("inside", "", "the inside interface (the client side)"),
		outside:     fs.String("outside", "", "the outside interface (the server side)"),
		insideAddr:  fs.String("inside-addr", "198.18.1.1/24", "netchan's gateway address on the inside, with its subnet"),
		outsideAddr: fs.String("outside-addr", "198.19.0.1/24", "netchan's gateway address on the outside, with its subnet"),
	}
}

// Resolve reads the parsed flags: the interfaces [inside, outside] and the Config.
func (f *Flags) Resolve() (ifaces []string, cfg Config, err error) {
	if *f.inside == "" || *f.outside == "" {
		return nil, cfg, fmt.Errorf("give --inside IF and --outside IF")
	}
	if cfg.Inside, err = netip.ParsePrefix(*f.insideAddr); err != nil {
		return nil, cfg, fmt.Errorf("--inside-addr: %w", err)
	}
	if cfg.Outside, err = netip.ParsePrefix(*f.outsideAddr); err != nil {
		return nil, cfg, fmt.Errorf("--outside-addr: %w", err)
	}
	return []string{*f.inside, *f.outside}, cfg, nil
}
