package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/netchan/netchan/bench/report"
)

const benchPeerUsage = `netchan bench peer [--src DIR] [--out DIR] [tcppeer flags]

netchan's TCP stack against gVisor's netstack in one process, through net.Conn: two hosts of
each stack on an in-memory wire with seeded loss, a bulk transfer (Gbit/s, CPU per GB) and
request/response (transactions/s, CPU per transaction, latency), interleaved rounds, medians,
netchan/gVisor ratios. It runs bench/tcppeer of the netchan source tree at --src (default: the
current directory) with 'go run . FLAGS -json FILE' in DIR/bench/tcppeer: the benchmark is a
module of its own, so that gVisor stays out of netchan's go.mod, and needs the source and the go
command. Its output is streamed; its document (netchan-bench/1) goes to --out/peer-DATE-TIME.json
and its table to stdout. Every flag but --src and --out is tcppeer's (-runs, -tests, -loss,
-bulk-mb, -rr-conns, -rr-duration, -wire, ...: netchan bench peer -h lists them).
`

func init() {
	benchCommands["peer"] = benchCommand{run: cmdBenchPeer, order: 40,
		about: "netchan's TCP vs gVisor's netstack in one process (bench/tcppeer, run from the source tree)",
		// Three rounds of bulk (64 MiB) and rr (2 s) at no loss and 1% loss: 24 runs of at most
		// a few seconds each, and the build, about two minutes.
		all: []string{"-runs", "3", "-bulk-mb", "64", "-rr-warmup", "500ms", "-rr-duration", "2s"}}
}

// peerStopWait is how long bench peer waits, after passing an interrupt on, for tcppeer to end
// its run in progress and write the runs so far (a bulk run at heavy loss can take a while).
const peerStopWait = time.Minute

// cmdBenchPeer runs `netchan bench peer`.
func cmdBenchPeer(args []string) error {
	src, out, rest, help, err := peerArgs(args)
	if err != nil {
		fmt.Fprint(os.Stderr, benchPeerUsage)
		return err
	}
	if help {
		fmt.Fprint(os.Stderr, benchPeerUsage)
		if dir, goCmd, err := peerSource(src); err == nil {
			fmt.Fprintln(os.Stderr, "\ntcppeer's flags:")
			cmd := exec.Command(goCmd, "run", ".", "-h")
			cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stderr, os.Stderr
			cmd.Run() // -h exits with status 0 or 2 by the flag package's rules; the text is what counts
		}
		return flag.ErrHelp
	}
	dir, goCmd, err := peerSource(src)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "netchan-bench-peer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	file := filepath.Join(tmp, "peer.json")
	return runReport(out, func(ctx context.Context) (*report.Document, error) {
		// -json first: tcppeer's flags end at the first argument that is not one.
		runErr := runPeer(ctx, goCmd, dir, append([]string{"run", ".", "-json", file}, rest...))
		doc, err := report.Read(file)
		if err != nil {
			if runErr != nil {
				return nil, runErr
			}
			return nil, fmt.Errorf("peer: tcppeer's document: %w", err)
		}
		// tcppeer's own command line stays in the set-up; the document's command is this one,
		// which runs it again from the source tree.
		doc.Setup = append([]string{"tcppeer in " + dir + ": " + doc.Command}, doc.Setup...)
		doc.Command = strings.TrimSpace("netchan bench peer " + strings.Join(args, " "))
		for i, f := range doc.Files {
			if !filepath.IsAbs(f) {
				doc.Files[i] = filepath.Join(tmp, f)
			}
		}
		doc.Files = relativeTo(out, doc.Files)
		return doc, runErr
	})
}

// peerArgs takes bench peer's own flags (--src, --out, -h) out of args and leaves the rest,
// tcppeer's, in order. -json is bench peer's to give.
func peerArgs(args []string) (src, out string, rest []string, help bool, err error) {
	src, out = ".", "bench/results"
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			continue
		}
		switch name {
		case "h", "help":
			help = true
			continue
		case "json":
			return "", "", nil, false, errors.New("peer: -json is bench peer's own (the document goes to --out)")
		case "src", "out":
		default:
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 == len(args) {
				return "", "", nil, false, fmt.Errorf("peer: --%s needs a directory", name)
			}
			i++
			val = args[i]
		}
		if name == "src" {
			src = val
		} else {
			out = val
		}
	}
	return src, out, rest, help, nil
}

// peerSource finds bench/tcppeer under the source tree src and the go command that runs it.
func peerSource(src string) (dir, goCmd string, err error) {
	dir = filepath.Join(src, "bench", "tcppeer")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", "", fmt.Errorf("peer: %s has no bench/tcppeer/go.mod: run netchan bench peer in the root of a netchan source tree, "+
			"or name one with --src (the gVisor benchmark is built from source, as a module of its own so that gVisor stays out of netchan's go.mod)", src)
	}
	goCmd, err = exec.LookPath("go")
	if err != nil {
		return "", "", errors.New("peer: the go command is not on PATH: bench peer builds and runs bench/tcppeer with 'go run' " +
			"(a module of its own, so that gVisor stays out of netchan's go.mod); install Go or add its bin directory to PATH")
	}
	return dir, goCmd, nil
}

// runPeer runs go with args in dir, its output streamed. go run and tcppeer get a process
// group of their own, so that an interrupt reaches both through ctx: tcppeer then ends its run
// in progress and writes the runs so far (go run ignores SIGINT and waits for it).
func runPeer(ctx context.Context, goCmd, dir string, args []string) error {
	cmd := exec.Command(goCmd, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "bench peer: interrupted: tcppeer ends its run in progress and writes the runs so far")
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case err = <-done:
		case <-time.After(peerStopWait):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
	}
	if err != nil {
		return fmt.Errorf("peer: go %s in %s: %w", strings.Join(args, " "), dir, err)
	}
	return nil
}
