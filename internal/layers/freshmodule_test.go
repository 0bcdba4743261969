package layers

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// userModule is the path of the fresh module that uses netchan.
const userModule = "example.com/user"

// TestFreshModule builds every program in examples/, copied unchanged into a new module outside
// the repository, the two ways the README tells another module to use netchan today: a go.work
// that uses both modules, and a replace directive. It runs `go build ./...` and `go vet ./...`
// (which also compiles the examples' tests) with the go command that runs this test, and needs
// no network beyond the Go module proxy: the replace variant starts from netchan's own go.sum,
// and a warm module cache needs none at all.
func TestFreshModule(t *testing.T) {
	root, module := moduleRoot(t)
	goVersion := strings.TrimSpace(goCmd(t, root, "list", "-m", "-f", "{{.GoVersion}}"))
	examples := filepath.Join(root, "examples")
	entries, err := os.ReadDir(examples)
	if err != nil {
		t.Fatalf("examples: %v", err)
	}
	var programs []string
	for _, e := range entries {
		if e.IsDir() {
			programs = append(programs, e.Name())
		}
	}
	if len(programs) == 0 {
		t.Fatalf("%s holds no program", examples)
	}
	goSum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatalf("netchan's go.sum: %v", err)
	}

	for _, variant := range []struct {
		name  string
		files map[string]string // go.mod's tail and other files, by name
		env   []string
	}{
		{
			name: "go.work",
			files: map[string]string{
				"go.work": "go " + goVersion + "\n\nuse .\nuse " + root + "\n",
			},
			// A workspace refuses -mod=mod; the workspace's go.sum files are netchan's and
			// go.work.sum, which the go command writes when it needs more.
			env: []string{"GOFLAGS=-buildvcs=false"},
		},
		{
			name: "replace",
			files: map[string]string{
				"go.mod": "\nrequire " + module + " v0.0.0\n\nreplace " + module + " => " + root + "\n",
				"go.sum": string(goSum),
			},
			// -mod=mod lets the go command add netchan's requirements to the user's go.mod,
			// as `go mod tidy` would.
			env: []string{"GOWORK=off", "GOFLAGS=-mod=mod -buildvcs=false"},
		},
	} {
		t.Run(variant.name, func(t *testing.T) {
			dir := t.TempDir()
			if strings.HasPrefix(dir, root+string(filepath.Separator)) {
				t.Fatalf("temporary directory %s is inside the repository %s", dir, root)
			}
			gomod := "module " + userModule + "\n\ngo " + goVersion + "\n" + variant.files["go.mod"]
			write(t, filepath.Join(dir, "go.mod"), gomod)
			for name, text := range variant.files {
				if name != "go.mod" {
					write(t, filepath.Join(dir, name), text)
				}
			}
			for _, p := range programs {
				copyTree(t, filepath.Join(examples, p), filepath.Join(dir, p))
			}

			env := append(os.Environ(), "GOTOOLCHAIN=local")
			if variant.name == "go.work" {
				env = append(env, "GOWORK="+filepath.Join(dir, "go.work"))
			}
			env = append(env, variant.env...)
			bin := t.TempDir() // go build -o DIR/ keeps the binaries out of the package directories
			for _, args := range [][]string{{"build", "-o", bin + "/", "./..."}, {"vet", "./..."}} {
				cmd := exec.Command("go", args...)
				cmd.Dir = dir
				cmd.Env = env
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Run(); err != nil {
					t.Errorf("a fresh module using netchan through %s cannot build examples/ unchanged:\n"+
						"go %s (in %s): %v\n%s\ngo.mod:\n%s", variant.name, strings.Join(args, " "), dir, err, out.String(), gomod)
				}
			}
		})
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies the regular files under src to dst, byte for byte.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s: %v", src, err)
	}
}
