// Package labtest gives tests a lab of their own: a unique name, built by
// lab.Up and removed by lab.Down when the test ends, pass or fail.
//
// Lab tests need root; they fail, never skip, without it, so that a CI run
// that silently skipped every traffic test cannot look green. The one
// exception is -short: the test script runs unit tests with -race -short
// first and lab tests in a second phase without -short (one package at a
// time, no -race), so under -short a lab test steps aside and says so.
package labtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/lab"
)

// Prefix starts every name UniqueName returns.
const Prefix = "nct"

var (
	probeOnce sync.Once
	probeErr  error
	namesMu   sync.Mutex
	names     = map[string]bool{}
)

// RequireRoot fails the test unless the process is root and can build a lab
// (namespaces, veth pairs, offloads, sysctls); the first call in a process
// builds and removes a one-queue pair lab to find out.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab test: runs in the lab phase of ./test.sh (go test -p 1, without -short)")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("labtest: %v", lab.ErrNotRoot)
	}
	probeOnce.Do(func() {
		name := uniqueName()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, probeErr = lab.Up(ctx, lab.Config{Name: name, QueueCount: 1}); probeErr == nil {
			probeErr = lab.Down(name)
		}
	})
	if probeErr != nil {
		t.Fatalf("labtest: cannot build a lab (network namespace + veth; needs iproute2 and sh): %v", probeErr)
	}
}

// UniqueName returns a lab name not used before in this process nor present
// on the machine: Prefix and 4 random base-36 characters.
func UniqueName(t testing.TB) string {
	t.Helper()
	return uniqueName()
}

func uniqueName() string {
	namesMu.Lock()
	defer namesMu.Unlock()
	for {
		n, err := rand.Int(rand.Reader, big.NewInt(36*36*36*36))
		if err != nil {
			panic(err)
		}
		s := n.Text(36)
		name := Prefix + strings.Repeat("0", 4-len(s)) + s
		if names[name] || exists(name) {
			continue
		}
		names[name] = true
		return name
	}
}

// exists reports whether anything of lab name is on the machine.
func exists(name string) bool {
	m, _ := filepath.Glob("/run/netns/" + name + "-*")
	_, err := os.Stat(filepath.Join(lab.StateDir, name+".json"))
	return len(m) > 0 || err == nil
}

// New builds a lab for the test (named by UniqueName if cfg.Name is empty)
// and removes it when the test and its subtests end, pass or fail.
func New(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	RequireRoot(t)
	if cfg.Name == "" {
		cfg.Name = UniqueName(t)
	}
	t.Cleanup(func() {
		if err := lab.Down(cfg.Name); err != nil {
			t.Errorf("labtest: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("labtest: %v", err)
	}
	return l
}

// SweepStale removes labs named Prefix... left behind by test runs that were
// killed. Call it from TestMain. It removes only labs whose owning process
// has exited (lab.SweepOrphans), so it is safe while other test binaries,
// such as other packages under `go test ./...`, use their own labs.
func SweepStale() {
	if os.Geteuid() != 0 {
		return // RequireRoot reports it
	}
	if err := lab.SweepOrphans(Prefix); err != nil {
		fmt.Fprintf(os.Stderr, "labtest: sweeping stale labs: %v\n", err)
	}
}
