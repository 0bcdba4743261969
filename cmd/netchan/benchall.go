package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/netchan/netchan/bench/plot"
	"github.com/netchan/netchan/bench/report"
)

// benchCommand is one `netchan bench NAME` subcommand. Each file that implements one registers
// it in an init function.
type benchCommand struct {
	run   func(args []string) error
	about string // one line for the usage
	// all is the scenario's arguments in `netchan bench all` (a shortened run), nil when the
	// command is not a scenario of the set (gen, search: they need a NIC and a reflector).
	all []string
	// order places the scenario in `bench all` and in the usage.
	order int
}

var benchCommands = map[string]benchCommand{}

func init() {
	benchCommands["table"] = benchCommand{run: cmdBenchTable, order: 100,
		about: "[DIR|FILE.json...]   the stored results (default bench/results) as Markdown tables, recomputed"}
	benchCommands["plot"] = benchCommand{run: cmdBenchPlot, order: 101,
		about: "[DIR|FILE.json...]   draw the stored results' PNG plots again, beside each document"}
	benchCommands["all"] = benchCommand{run: cmdBenchAll, order: 0,
		about: "[--only a,b] [--skip a,b] [--out DIR]   every lab scenario, shortened, one after another: JSON, PNGs, one summary"}
}

// scenarioNames lists the commands that take part in `bench all`, in their order.
func scenarioNames() []string {
	var names []string
	for n, c := range benchCommands {
		if c.all != nil {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		if x := benchCommands[a].order - benchCommands[b].order; x != 0 {
			return x
		}
		return strings.Compare(a, b)
	})
	return names
}

func benchTopUsage() string {
	names := make([]string, 0, len(benchCommands))
	for n := range benchCommands {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if x := benchCommands[a].order - benchCommands[b].order; x != 0 {
			return x
		}
		return strings.Compare(a, b)
	})
	var sb strings.Builder
	sb.WriteString("netchan bench COMMAND [flags]   (netchan bench COMMAND -h: its flags)\n\n")
	for _, n := range names {
		fmt.Fprintf(&sb, "  %-11s %s\n", n, benchCommands[n].about)
	}
	return sb.String()
}

// cmdBenchTop runs `netchan bench COMMAND ...`.
func cmdBenchTop(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, benchTopUsage())
		return errors.New("say which benchmark")
	}
	c, ok := benchCommands[args[0]]
	if !ok {
		fmt.Fprint(os.Stderr, benchTopUsage())
		return fmt.Errorf("unknown command %q", args[0])
	}
	return c.run(args[1:])
}

// readDocs loads the documents named by args (directories and files; none: bench/results).
func readDocs(cmd string, args []string) ([]*report.Document, error) {
	if len(args) == 0 {
		args = []string{"bench/results"}
	}
	var docs []*report.Document
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("bench %s: %w", cmd, err)
		}
		if st.IsDir() {
			ds, skipped, err := report.ReadDir(a)
			if err != nil {
				return nil, fmt.Errorf("bench %s: %w", cmd, err)
			}
			if len(skipped) > 0 {
				fmt.Fprintf(os.Stderr, "bench %s: %d JSON file(s) in %s are not netchan-bench/1 documents (older formats): skipped\n", cmd, len(skipped), a)
			}
			docs = append(docs, ds...)
			continue
		}
		d, err := report.Read(a)
		if err != nil {
			return nil, fmt.Errorf("bench %s: %w", cmd, err)
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("bench %s: no netchan-bench/1 documents in %s", cmd, strings.Join(args, " "))
	}
	return docs, nil
}

// cmdBenchPlot draws the plots of stored documents again (after a change to bench/plot, or
// for documents copied from another machine), beside each.
func cmdBenchPlot(args []string) error {
	docs, err := readDocs("plot", args)
	if err != nil {
		return err
	}
	for _, d := range docs {
		dir := "bench/results"
		if len(args) == 1 {
			if st, err := os.Stat(args[0]); err == nil && st.IsDir() {
				dir = args[0]
			}
		}
		paths, err := plot.Document(d, dir)
		if err != nil {
			return fmt.Errorf("bench plot: %s: %w", d.Path(dir), err)
		}
		for _, p := range paths {
			fmt.Println(p)
		}
	}
	return nil
}

// cmdBenchTable prints stored documents as Markdown: every netchan-bench/1 document in the
// directories and files given (default bench/results), oldest first; JSON files of another
// kind are named and skipped.
func cmdBenchTable(args []string) error {
	docs, err := readDocs("table", args)
	if err != nil {
		return err
	}
	for i, d := range docs {
		if i > 0 {
			fmt.Println()
		}
		fmt.Print(d.Table())
	}
	return nil
}

const benchAllUsage = `netchan bench all [--only a,b] [--skip a,b] [--out DIR]

Runs every lab scenario one after another, each shortened (fewer rounds, shorter windows; the
arguments each uses are listed below), on this machine's lab veths: every scenario leaves its
JSON document and PNG plots in --out, and the run ends with ALL-DATE.md (every table) and
ALL-DATE-ratios.png (every ratio). About 11 minutes on a 2-core machine. A scenario that fails
is reported and the others still run. Run each scenario by itself for full-length figures.
`

// cmdBenchAll runs `netchan bench all`.
func cmdBenchAll(args []string) error {
	fs := flag.NewFlagSet("bench all", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, benchAllUsage+"\nscenarios:\n")
		for _, n := range scenarioNames() {
			fmt.Fprintf(os.Stderr, "  %-11s netchan bench %s %s\n", n, n, strings.Join(benchCommands[n].all, " "))
		}
		fmt.Fprintln(os.Stderr)
		fs.PrintDefaults()
	}
	only := fs.String("only", "", "comma-separated scenarios to run (default: all of them)")
	skip := fs.String("skip", "", "comma-separated scenarios to leave out")
	out := fs.String("out", "bench/results", "directory for the documents, plots and summary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	names := scenarioNames()
	pick := func(list string) ([]string, error) {
		if list == "" {
			return nil, nil
		}
		l := strings.Split(list, ",")
		for _, n := range l {
			if !slices.Contains(names, n) {
				return nil, fmt.Errorf("bench all: no scenario %q (scenarios: %s)", n, strings.Join(names, ", "))
			}
		}
		return l, nil
	}
	o, err := pick(*only)
	if err != nil {
		return err
	}
	sk, err := pick(*skip)
	if err != nil {
		return err
	}
	var run []string
	for _, n := range names {
		if (o == nil || slices.Contains(o, n)) && !slices.Contains(sk, n) {
			run = append(run, n)
		}
	}
	if len(run) == 0 {
		return errors.New("bench all: no scenario left to run")
	}
	started := time.Now().UTC().Truncate(time.Second)
	var failed []string
	for i, n := range run {
		c := benchCommands[n]
		a := append(slices.Clone(c.all), "--out", *out)
		fmt.Fprintf(os.Stderr, "bench all: scenario %d of %d: netchan bench %s %s (%s since the start)\n", i+1, len(run), n,
			strings.Join(a, " "), time.Since(started).Round(time.Second))
		if err := c.run(a); err != nil {
			fmt.Fprintf(os.Stderr, "bench all: %s failed: %v\n", n, err)
			failed = append(failed, fmt.Sprintf("%s: %v", n, err))
		}
	}
	docs, _, err := report.ReadDir(*out)
	if err != nil {
		return err
	}
	var mine []*report.Document
	for _, d := range docs {
		if !d.Started.Before(started) {
			mine = append(mine, d)
		}
	}
	stamp := started.Format("20060102-150405")
	if len(mine) > 0 {
		var sb strings.Builder
		fmt.Fprintf(&sb, "# netchan bench all, %s\n\n%d scenario(s) in %s: %s\n\n", started.Format("2006-01-02 15:04 UTC"), len(mine),
			time.Since(started).Round(time.Second), "netchan bench all "+strings.Join(args, " "))
		for _, d := range mine {
			sb.WriteString(d.Table())
			sb.WriteString("\n")
		}
		if len(failed) > 0 {
			sb.WriteString("Failed:\n")
			for _, f := range failed {
				fmt.Fprintf(&sb, "- %s\n", f)
			}
		}
		md := filepath.Join(*out, "ALL-"+stamp+".md")
		if err := os.WriteFile(md, []byte(sb.String()), 0o644); err != nil {
			return err
		}
		png := filepath.Join(*out, "ALL-"+stamp+"-ratios.png")
		if err := plot.Ratios(mine, png); err != nil {
			fmt.Fprintf(os.Stderr, "bench all: %v\n", err)
		} else {
			fmt.Println("ratios:", png)
		}
		fmt.Println("summary:", md)
	}
	if len(failed) > 0 {
		return fmt.Errorf("bench all: %d of %d scenarios failed: %s", len(failed), len(run), strings.Join(failed, "; "))
	}
	return nil
}

// runReport runs a benchmark that reports through bench/report until it ends or SIGINT/SIGTERM
// cancels it (the harness removes its lab either way), stores its document in dir (also the
// runs so far of a benchmark that stopped), draws its plots beside it and prints its table.
func runReport(dir string, run func(context.Context) (*report.Document, error)) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	doc, err := run(ctx)
	if doc == nil || len(doc.Runs) == 0 {
		return err
	}
	path, werr := doc.Write(dir)
	if werr != nil {
		return errors.Join(err, werr)
	}
	fmt.Print("\n" + doc.Table())
	fmt.Printf("\nresults: %s\n", path)
	pngs, perr := plot.Document(doc, dir)
	for _, p := range pngs {
		fmt.Printf("plot: %s\n", p)
	}
	if perr != nil {
		err = errors.Join(err, fmt.Errorf("drawing %s: %w", path, perr))
	}
	if err != nil {
		return fmt.Errorf("%w (the runs before it are in %s)", err, path)
	}
	return nil
}

// printProgress is every harness's Progress: one line on stderr before each run.
func printProgress(p report.Progress) { fmt.Fprintf(os.Stderr, "bench: %s\n", p) }
