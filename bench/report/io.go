package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrNotReport: the file is JSON of another kind (a result from before this format, a
// harness's own output).
var ErrNotReport = errors.New("not a netchan-bench/1 document")

// Path is where Write stores d in dir: SCENARIO-YYYYMMDD-HHMMSS.json (started, UTC).
func (d *Document) Path(dir string) string {
	return filepath.Join(dir, fmt.Sprintf("%s-%s.json", d.Scenario, d.Started.UTC().Format("20060102-150405")))
}

// Write stores the document as Path(dir), making dir if needed, and returns the path.
func (d *Document) Write(dir string) (string, error) {
	if d.Schema == "" {
		d.Schema = SchemaVersion
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return "", err
	}
	p := d.Path(dir)
	return p, os.WriteFile(p, append(b, '\n'), 0o644)
}

// Read loads a document and summarises it again (today's rules, see the package doc). A JSON
// file of another kind gives an error wrapping ErrNotReport.
func Read(path string) (*Document, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var probe struct {
		Schema string `json:"schema"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if probe.Schema != SchemaVersion {
		return nil, fmt.Errorf("%s: %w (schema %q)", path, ErrNotReport, probe.Schema)
	}
	d := new(Document)
	if err := json.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d.Summarize()
	return d, nil
}

// ReadDir loads every document among dir's *.json files, oldest first (by start time), and
// names the JSON files it skipped because they are of another kind. A file that claims the
// schema but does not parse is an error.
func ReadDir(dir string) (docs []*Document, skipped []string, err error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, nil, err
	}
	slices.Sort(paths)
	for _, p := range paths {
		d, err := Read(p)
		if errors.Is(err, ErrNotReport) {
			skipped = append(skipped, p)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		docs = append(docs, d)
	}
	slices.SortStableFunc(docs, func(a, b *Document) int { return a.Started.Compare(b.Started) })
	return docs, skipped, nil
}

// Latest keeps the newest document of each scenario, in the order of scenarios given (those
// absent are skipped; no scenarios: every scenario, by name).
func Latest(docs []*Document, scenarios ...string) []*Document {
	newest := map[string]*Document{}
	for _, d := range docs {
		if cur := newest[d.Scenario]; cur == nil || d.Started.After(cur.Started) {
			newest[d.Scenario] = d
		}
	}
	if len(scenarios) == 0 {
		for s := range newest {
			scenarios = append(scenarios, s)
		}
		slices.SortFunc(scenarios, strings.Compare)
	}
	var out []*Document
	for _, s := range scenarios {
		if d := newest[s]; d != nil {
			out = append(out, d)
		}
	}
	return out
}
