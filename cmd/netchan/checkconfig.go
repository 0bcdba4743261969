package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/nat"
)

// cmdCheckConfig validates a configuration file without running anything: the file itself
// (config.Load: JSON, field types, values and how they fit together, the stack's limits in
// "stack" among them), then the options of the pipeline it is for (the NAT's ports,
// filtering, timeouts, forwards and mapping limits). It prints "ok", or the error naming the
// field (exit 1).
func cmdCheckConfig(args []string) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	command := fs.String("command", "", "the command the file is for: run, echo or nat (default: nat when the file has pipeline.options, else run)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: netchan check-config [--command run|echo|nat] FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("give one configuration file")
	}
	cfg, err := config.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	cmd := *command
	if cmd == "" {
		cmd = "run"
		if len(cfg.Pipeline.Options) > 0 {
			cmd = "nat" // the bundled pipelines and echo take no options
		}
	}
	if err := checkOptions(cfg, cmd); err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	fmt.Println("ok")
	return nil
}

// checkOptions checks what the command does with cfg beyond config.Validate: its pipeline's
// own options.
func checkOptions(cfg *config.Config, command string) error {
	switch command {
	case "run", "echo":
		if command == "echo" && len(cfg.Interfaces) > 1 {
			return &config.FieldError{Field: "interfaces", Msg: "echo runs on one interface"}
		}
		return cfg.Pipeline.DecodeOptions(&struct{}{})
	case "nat":
		var opt natOptions
		if err := cfg.Pipeline.DecodeOptions(&opt); err != nil {
			return err
		}
		if len(cfg.Interfaces) > 2 {
			return &config.FieldError{Field: "interfaces", Msg: "nat runs on two interfaces, [inside, outside]"}
		}
		// Interfaces and addresses may come from flags (--inside-addr ...): where the file
		// has none, any address stands in, and the forwards are checked only for their form.
		c := *cfg
		c.Interfaces = append([]config.Interface(nil), cfg.Interfaces...)
		for len(c.Interfaces) < 2 {
			c.Interfaces = append(c.Interfaces, config.Interface{})
		}
		for i := range c.Interfaces {
			if len(c.Interfaces[i].Addresses) == 0 {
				c.Interfaces[i].Addresses = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{0, 0, 0, byte(i + 1)}), 0)}
			}
		}
		nc, err := natConfig(&c, opt)
		if err != nil {
			return optionsError(err)
		}
		if _, err := nat.New(nc, nil); err != nil {
			return optionsError(err)
		}
		return nil
	}
	return fmt.Errorf("--command %q: want run, echo or nat", command)
}
