package layers

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// layer is a row of the layer table: 1 (bottom) to 6 (programs), or tool.
type layer int

// tool marks a package that is not library: the lab, the traffic generator and test helpers.
// Only programs (layer 6), other tools and test files import it.
const tool layer = 0

// top is the programs' layer: commands and benchmarks, which may import tools.
const top layer = 6

func (l layer) String() string {
	if l == tool {
		return "tool"
	}
	return fmt.Sprintf("layer %d", int(l))
}

// layerTable places every package of the module. A pattern is a path inside the module ("."
// is the root package); one ending in "/..." also places every package below it. The longest
// pattern that matches a package wins. A new package that no pattern matches fails TestLayers
// until it has a line here.
var layerTable = []struct {
	pattern string
	layer   layer
}{
	// 1: the stage API, the claim grammar, the stage author's harness, header views, the flow
	// tree and the runtime (cpu, the privilege check, the one package with raw syscalls, AF_XDP
	// ports, the XDP program).
	{"pipelines", 1},
	{"pipelines/claim", 1},
	{"pipelines/stagetest", 1},
	{"stack/header", 1},
	{"flowtree", 1},
	{"runtime/cpu", 1},
	{"runtime/caps", 1},
	{"runtime/internal/...", 1},
	{"runtime/afxdp", 1},
	{"runtime/memport", 1},
	{"runtime/xdpprog", 1},
	{"runtime/hostnet", 1},
	{"runtime/rss", 1},
	{"internal/spsc", 1},

	// 2: the stack.
	{"stack", 2},

	// 3: NAT, netchannels and the shards.
	{"nat", 3},
	{"pipelines/netchannel", 3},
	{"shards", 3},

	// 4: the bundled pipelines.
	{"pipelines/basic", 4},
	{"pipelines/echo", 4},
	{"pipelines/fault", 4},

	// 5: the front door.
	{".", 5},

	// 6: programs. The examples are programs a user copies: they start through the front
	// door, so they sit above it, with the command.
	{"cmd/...", 6},
	{"bench/...", 6},
	{"examples/...", 6},

	// Tools: not library.
	{"runtime/lab/...", tool},
	{"runtime/trafficgen/...", tool},
	{"internal/...", tool},
}

// layerOwns says what each layer owns, for the README's table.
var layerOwns = map[layer]string{
	6:    "programs: flags, config files, wiring; measurements and the NIC benchmark; example programs",
	5:    "the front door: Config, App, Start, Instance",
	4:    "bundled apps built from stages, the stack and NAT: reflect, drop, count, the echo service, the fault stage",
	3:    "NAT44 mappings and rewriting (a shared port→shard table, the XDP fast path); netchannels (flows from the NIC to a goroutine, zero-copy); the per-core loops, hand-off between shards, frame accounting, counters",
	2:    "the per-shard, sans-IO IPv4 stack: ARP and neighbours, routes, fragments, ICMP, UDP and TCP sockets as Go's net interfaces",
	1:    "the stage API (Batch, packet handle, Stage, verdicts, drop reasons, owner functions, App, Toeplitz RSS hash), the claim grammar, the stage test harness; zero-copy header views and checksums; the lock-free flow tree; CPU topology and pinning, the privilege check, AF_XDP rings and ports, the XDP program with its claim maps and fast flows; the host kernel's sockets, reserved ports and neighbours; the NIC's RSS settings; the single-producer ring",
	tool: "namespace labs of veth pairs, the lab's traffic generator, test helpers: imported only by programs, other tools and tests",
}

// place returns the layer of pkg (a path inside the module) and whether the table places it.
func place(pkg string) (layer, bool) {
	best, bestLen, found := layer(0), -1, false
	for _, r := range layerTable {
		p, n := r.pattern, -1
		if base, ok := strings.CutSuffix(p, "/..."); ok {
			if pkg == base || strings.HasPrefix(pkg, base+"/") {
				n = len(base)
			}
		} else if pkg == p {
			n = len(p) + 1 // an exact name beats a pattern of the same prefix
		}
		if n > bestLen {
			best, bestLen, found = r.layer, n, true
		}
	}
	return best, found
}

// allowed says whether a package in layer from may import one in layer to.
func allowed(from, to layer) bool {
	switch {
	case to == tool:
		return from == tool || from == top
	case from == tool:
		return to < top
	default:
		return to <= from
	}
}

// pkgImports is one package of the module and the module's packages it imports, both as paths
// inside the module.
type pkgImports struct {
	path    string
	imports []string
}

// check returns one message per package the table does not place and per import the rules
// forbid, sorted.
func check(pkgs []pkgImports) []string {
	var bad []string
	for _, p := range pkgs {
		from, ok := place(p.path)
		if !ok {
			bad = append(bad, fmt.Sprintf("%s has no layer: add it to layerTable in internal/layers/layers_test.go (and to the README's table)", p.path))
			continue
		}
		for _, imp := range p.imports {
			to, ok := place(imp)
			if !ok {
				continue // reported as its own package
			}
			if !allowed(from, to) {
				bad = append(bad, fmt.Sprintf("%s (%v) imports %s (%v): %s", p.path, from, imp, to, why(from, to)))
			}
		}
	}
	sort.Strings(bad)
	return bad
}

func why(from, to layer) string {
	switch {
	case to == tool:
		return "tools stay out of library packages; move the code the library needs below it, or the import into a test"
	case from == tool:
		return "tools import library packages, not programs"
	default:
		return "imports go down only; what it wants belongs lower down"
	}
}

// rel turns an import path into a path inside the module ("." for the root), or "" when the
// package is not the module's.
func rel(module, path string) string {
	if path == module {
		return "."
	}
	if r, ok := strings.CutPrefix(path, module+"/"); ok {
		return r
	}
	return ""
}

// moduleRoot returns the directory and path of the module this test belongs to.
func moduleRoot(t *testing.T) (dir, module string) {
	t.Helper()
	gomod := strings.TrimSpace(goCmd(t, ".", "env", "GOMOD"))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: not inside a module")
	}
	dir = filepath.Dir(gomod)
	module = strings.TrimSpace(goCmd(t, dir, "list", "-m", "-f", "{{.Path}}"))
	return dir, module
}

// goCmd runs the go command found on PATH (go test puts its own GOROOT/bin first) in dir, with
// workspaces off, and returns its standard output.
func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return string(out)
}

// listImports returns the module's packages with the module's packages each imports; with
// tests, the imports of its test files instead.
func listImports(t *testing.T, dir, module string, tests bool) []pkgImports {
	t.Helper()
	format := `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`
	if tests {
		format = `{{.ImportPath}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}`
	}
	out := goCmd(t, dir, "list", "-deps", "-f", format, "./...")
	var pkgs []pkgImports
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		p := pkgImports{path: rel(module, f[0])}
		if p.path == "" {
			continue // the standard library or another module
		}
		seen := map[string]bool{}
		for _, imp := range f[1:] {
			if r := rel(module, imp); r != "" && r != p.path && !seen[r] {
				seen[r] = true
				p.imports = append(p.imports, r)
			}
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list -deps ./... in %s listed no package of %s", dir, module)
	}
	return pkgs
}

// TestLayers checks the module's non-test imports against the layer table.
func TestLayers(t *testing.T) {
	dir, module := moduleRoot(t)
	pkgs := listImports(t, dir, module, false)
	for _, msg := range check(pkgs) {
		t.Error(msg)
	}

	// Patterns that place no package: a package moved or is not written yet.
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p.path] = true
	}
	for _, r := range layerTable {
		base, wild := strings.CutSuffix(r.pattern, "/...")
		used := false
		for p := range seen {
			if p == base || wild && strings.HasPrefix(p, base+"/") {
				used = true
				break
			}
		}
		if !used {
			t.Logf("layerTable: %q places no package today", r.pattern)
		}
	}

	// Test files may import upward and import tools (a stage's test runs it in the lab). Say
	// where they import a library package above their own, which is legal but worth knowing:
	// it ties the lower package's tests to the upper one.
	for _, p := range listImports(t, dir, module, true) {
		from, ok := place(p.path)
		if !ok {
			continue
		}
		for _, imp := range p.imports {
			if to, ok := place(imp); ok && to != tool && from != tool && !allowed(from, to) {
				t.Logf("test files: %s (%v) import %s (%v)", p.path, from, imp, to)
			}
		}
	}
}

// TestCheck proves that the check fails: on an upward import, on a tool imported by a library
// package, on a program imported by a tool and on a package the table does not place, and
// passes the imports the rules allow.
func TestCheck(t *testing.T) {
	pkgs := []pkgImports{
		{path: "pipelines", imports: []string{"runtime/xdpprog", "stack"}},  // 1 → 2: upward
		{path: "stack", imports: []string{"pipelines", "stack/header"}},     // down: fine
		{path: "shards", imports: []string{"pipelines", "runtime/lab"}},     // library → tool
		{path: "nat", imports: []string{"shards", "stack"}},                 // same layer, down: fine
		{path: "runtime/trafficgen", imports: []string{"runtime/afxdp"}},    // tool → library: fine
		{path: "runtime/lab/labtest", imports: []string{"bench"}},           // tool → program
		{path: "bench", imports: []string{"runtime/lab", "nat", "."}},       // program → anything: fine
		{path: "pipelines/echo", imports: []string{".", "pipelines/basic"}}, // 4 → 5: upward
		{path: "newpkg", imports: []string{"pipelines"}},                    // not placed
	}
	want := []string{
		"newpkg has no layer: add it to layerTable in internal/layers/layers_test.go (and to the README's table)",
		"pipelines (layer 1) imports stack (layer 2): imports go down only; what it wants belongs lower down",
		"pipelines/echo (layer 4) imports . (layer 5): imports go down only; what it wants belongs lower down",
		"runtime/lab/labtest (tool) imports bench (layer 6): tools import library packages, not programs",
		"shards (layer 3) imports runtime/lab (tool): tools stay out of library packages; move the code the library needs below it, or the import into a test",
	}
	got := check(pkgs)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("check:\ngot\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// TestPlace pins the longest-match rule on the table itself.
func TestPlace(t *testing.T) {
	for pkg, want := range map[string]layer{
		".":                   5,
		"pipelines":           1,
		"pipelines/basic":     4,
		"pipelines/stagetest": 1,
		"runtime/afxdp":       1,
		"runtime/internal/x":  1,
		"runtime/xdpprog":     1,
		"runtime/lab":         tool,
		"runtime/lab/labtest": tool,
		"runtime/trafficgen":  tool,
		"internal/testpkt":    tool,
		"stack/header":        1,
		"stack":               2,
		"cmd/netchan/config":  6,
		"bench/natbench":      6,
		"examples/portfilter": 6,
	} {
		if got, ok := place(pkg); !ok || got != want {
			t.Errorf("place(%q) = %v, %v; want %v", pkg, got, ok, want)
		}
	}
	for _, pkg := range []string{"pipelinesx", "stack/headerx", "runtime", "runtime/new", "cmdline"} {
		if l, ok := place(pkg); ok {
			t.Errorf("place(%q) = %v; want no layer", pkg, l)
		}
	}
}

// TestLayerTableMarkdown prints the layer table for the README (run with -v).
// TestREADMELayerTable: the README's layer table is this file's table, so the two cannot drift.
func TestREADMELayerTable(t *testing.T) {
	root, _ := moduleRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := markdown()
	text := string(b)
	i := strings.Index(text, "| layer | packages | owns |\n")
	if i < 0 {
		t.Fatalf("README.md has no layer table; put this one in:\n%s", want)
	}
	end := i
	for _, line := range strings.SplitAfter(text[i:], "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		end += len(line)
	}
	if got := text[i:end]; got != want {
		t.Fatalf("README.md's layer table differs from internal/layers' table; replace it with:\n%s", want)
	}
}

// markdown renders layerTable as the README's table, top layer first, tools last.
func markdown() string {
	byLayer := map[layer][]string{}
	for _, r := range layerTable {
		name := "`" + r.pattern + "`"
		if r.pattern == "." {
			name = "root package `netchan`"
		}
		byLayer[r.layer] = append(byLayer[r.layer], name)
	}
	var b strings.Builder
	b.WriteString("| layer | packages | owns |\n|---|---|---|\n")
	for _, l := range []layer{6, 5, 4, 3, 2, 1, tool} {
		label := fmt.Sprint(int(l))
		if l == tool {
			label = "tools"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", label, strings.Join(byLayer[l], ", "), layerOwns[l])
	}
	return b.String()
}
