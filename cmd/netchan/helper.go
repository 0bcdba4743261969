package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netchan/netchan/cmd/netchan/doctor"
	"github.com/netchan/netchan/runtime/lab"
)

// helperCommand is the hidden command netchan re-executes itself with inside a network
// namespace (`ip netns exec NS /path/to/netchan _helper ...`), for the work that must happen
// in a process living there: setns only moves one thread, so netchan never switches its own.
// It replaces the ping and ethtool binaries:
//
//	netchan _helper ping ADDR COUNT    ICMP echo, 200 ms apart, 2 s to answer each; prints
//	                                   ping(8)'s lines; exit 1 if nothing answered
//	netchan _helper offloads IFACE     IFACE's offloads as `ethtool -k` lines (the doctor's)
const helperCommand = "_helper"

func cmdHelper(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%s: want ping ADDR COUNT or offloads IFACE", helperCommand)
	}
	switch {
	case args[0] == "ping" && len(args) == 3:
		dst, err := netip.ParseAddr(args[1])
		if err != nil {
			return err
		}
		count, err := strconv.Atoi(args[2])
		if err != nil || count < 1 {
			return fmt.Errorf("ping: count %q: want a positive number", args[2])
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		_, err = lab.Ping(ctx, os.Stdout, dst, count, 200*time.Millisecond, 2*time.Second)
		return err
	case args[0] == "offloads" && len(args) == 2:
		return doctor.WriteOffloads(os.Stdout, args[1])
	}
	return fmt.Errorf("%s: unknown %q: want ping ADDR COUNT or offloads IFACE", helperCommand, args)
}

// helperInNamespace returns the command that runs `netchan _helper args...` in namespace ns.
func helperInNamespace(ctx context.Context, ns string, args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return (*lab.Lab)(nil).Command(ctx, ns, append([]string{exe, helperCommand}, args...)...), nil
}

// nsPing pings dst count times from namespace ns through the helper (a Go ICMP socket in a
// process started there: no ping binary) and returns what it printed, ping(8)'s lines.
func nsPing(ctx context.Context, ns string, dst netip.Addr, count int) (string, error) {
	cmd, err := helperInNamespace(ctx, ns, "ping", dst.String(), strconv.Itoa(count))
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimRight(string(out), "\n"), err
}
