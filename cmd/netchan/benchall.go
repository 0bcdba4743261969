package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

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

// cmdBenchTable prints stored documents as Markdown: every netchan-bench/1 document in the
// directories and files given (default bench/results), oldest first; JSON files of another
// kind are named and skipped.
func cmdBenchTable(args []string) error {
	if len(args) == 0 {
		args = []string{"bench/results"}
	}
	var docs []*report.Document
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return fmt.Errorf("bench table: %w", err)
		}
		if st.IsDir() {
			ds, skipped, err := report.ReadDir(a)
			if err != nil {
				return fmt.Errorf("bench table: %w", err)
			}
			if len(skipped) > 0 {
				fmt.Fprintf(os.Stderr, "bench table: %d JSON file(s) in %s are not netchan-bench/1 documents (older formats): skipped\n", len(skipped), a)
			}
			docs = append(docs, ds...)
			continue
		}
		d, err := report.Read(a)
		if err != nil {
			return fmt.Errorf("bench table: %w", err)
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return fmt.Errorf("bench table: no netchan-bench/1 documents in %s", strings.Join(args, " "))
	}
	for i, d := range docs {
		if i > 0 {
			fmt.Println()
		}
		fmt.Print(d.Table())
	}
	return nil
}
