package trafficgen

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// Args renders c as command-line flags that ParseArgs reads back; a sender runs as its own
// process inside the peer's namespace (`ip netns exec NS netchan lab send ARGS`).
func (c Config) Args() []string {
	a := []string{
		"--iface", c.Iface, "--queue", strconv.Itoa(c.Queue), "--dst-mac", c.DstMAC.String(),
		"--src", c.Src.String(), "--dst", c.Dst.String(),
		"--sport", strconv.Itoa(int(c.SrcPort)), "--dport", strconv.Itoa(int(c.DstPort)),
		"--flows", strconv.Itoa(c.Flows), "--size", strconv.Itoa(c.Size),
		"--count", strconv.FormatUint(c.Count, 10), "--duration", c.Duration.String(),
		"--rate", strconv.Itoa(c.Rate), "--run-id", strconv.FormatUint(uint64(c.RunID), 10),
		"--wait", c.Wait.String(),
	}
	if c.Verify {
		a = append(a, "--verify")
	}
	if c.Receive {
		a = append(a, "--receive")
	}
	if len(c.Queues) > 0 {
		a = append(a, "--queues", FormatCPUList(c.Queues))
	}
	if c.Static {
		a = append(a, "--static")
	}
	if len(c.CPUs) > 0 {
		a = append(a, "--cpus", FormatCPUList(c.CPUs))
	}
	if c.CountReplies {
		a = append(a, "--count-replies")
	}
	if c.Announce {
		a = append(a, "--announce")
	}
	if c.Engine != "" {
		a = append(a, "--engine", c.Engine)
	}
	return a
}

// ParseArgs reads a sender's flags.
func ParseArgs(args []string) (Config, error) {
	fs := flag.NewFlagSet("lab send", flag.ContinueOnError)
	var c Config
	fs.StringVar(&c.Iface, "iface", "", "interface to send on")
	fs.IntVar(&c.Queue, "queue", 0, "queue to send on (on veth the receiver gets it on the same queue)")
	dstMAC := fs.String("dst-mac", "", "destination MAC")
	src := fs.String("src", "198.18.0.2", "source IPv4 address")
	dst := fs.String("dst", "198.18.0.1", "destination IPv4 address")
	sport := fs.Uint("sport", 40000, "first source port")
	dport := fs.Uint("dport", 9, "destination port")
	fs.IntVar(&c.Flows, "flows", 1, "flows (distinct source ports)")
	fs.IntVar(&c.Size, "size", 60, "frame size in bytes (60..1514)")
	fs.Uint64Var(&c.Count, "count", 0, "frames to send")
	fs.DurationVar(&c.Duration, "duration", 0, "send for this long")
	fs.IntVar(&c.Rate, "rate", 0, "frames per second (0: as fast as possible)")
	runID := fs.Uint("run-id", 1, "marks this run's frames")
	fs.BoolVar(&c.Verify, "verify", false, "capture reflected frames and check them byte for byte")
	fs.BoolVar(&c.Receive, "receive", false, "only receive: capture this run's frames arriving forwarded, until --count or --wait")
	fs.DurationVar(&c.Wait, "wait", 2*time.Second, "with --verify or --count-replies, how long to wait for replies")
	queues := fs.String("queues", "", "send on these queues (e.g. 0,1 or 0-3), one socket each, bursts round-robin; replaces --queue")
	fs.BoolVar(&c.Static, "static", false, "build each UMEM frame once and resend it unchanged (fastest; sequence numbers repeat)")
	cpus := fs.String("cpus", "", "pin every thread of the sender to these CPUs (e.g. 0)")
	fs.BoolVar(&c.CountReplies, "count-replies", false, "count (and drop) IPv4 frames arriving on --iface with a native XDP program, NAPI threads pinned with the sender")
	fs.StringVar(&c.Engine, "engine", "", "afxdp (AF_XDP socket per queue, the default) or xdp (XDP_TX in live-frame mode: faster, one queue per core)")
	fs.BoolVar(&c.Announce, "announce", false, "print \"trafficgen: sending\" on stderr once the first frames are out")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var err error
	if *dstMAC == "" && c.Receive {
		*dstMAC = "00:00:00:00:00:00"
	}
	if c.DstMAC, err = net.ParseMAC(*dstMAC); err != nil {
		return c, fmt.Errorf("--dst-mac %q: %w", *dstMAC, err)
	}
	if c.Src, err = netip.ParseAddr(*src); err != nil {
		return c, fmt.Errorf("--src: %w", err)
	}
	if c.Dst, err = netip.ParseAddr(*dst); err != nil {
		return c, fmt.Errorf("--dst: %w", err)
	}
	if c.Size > 1514 {
		return c, fmt.Errorf("--size %d: at most 1514", c.Size)
	}
	c.SrcPort, c.DstPort, c.RunID = uint16(*sport), uint16(*dport), uint32(*runID)
	if c.Queues, err = ParseCPUList(*queues); err != nil {
		return c, fmt.Errorf("--queues: %w", err)
	}
	if c.CPUs, err = ParseCPUList(*cpus); err != nil {
		return c, fmt.Errorf("--cpus: %w", err)
	}
	return c, nil
}

// Main parses args, runs the sender until done or SIGINT/SIGTERM, and prints the Result as
// one JSON line on stdout.
func Main(args []string) error {
	c, err := ParseArgs(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, c)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// ChildEnv marks a test binary re-executed as a sender.
const ChildEnv = "NETCHAN_TRAFFICGEN_CHILD"

// RunChildIfAsked turns a test binary into a sender when ChildEnv is set; call it first thing
// in TestMain so lab tests can run senders inside namespaces without building the CLI.
func RunChildIfAsked() {
	if os.Getenv(ChildEnv) == "" {
		return
	}
	if err := Main(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "trafficgen:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Command builds `ip netns exec NS argv... ARGS` for a sender. argv is the program that runs
// Main: the netchan binary with "lab", "send", or a test binary (with ChildEnv set, which
// Command does).
func Command(ctx context.Context, ns string, argv []string, c Config) *exec.Cmd {
	full := append([]string{"netns", "exec", ns}, argv...)
	full = append(full, c.Args()...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	return cmd
}

// Decode reads a sender's JSON result.
func Decode(out []byte) (Result, error) {
	var r Result
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("sender printed %q: %w", out, err)
	}
	return r, nil
}
