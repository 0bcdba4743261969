package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBenchPeerNoSource: outside a netchan source tree bench peer says what is missing and what
// to do, before it runs or writes anything.
func TestBenchPeerNoSource(t *testing.T) {
	src, out := t.TempDir(), filepath.Join(t.TempDir(), "results")
	err := cmdBenchPeer([]string{"--src", src, "--out", out, "-runs", "1"})
	if err == nil {
		t.Fatal("bench peer ran without a source tree")
	}
	for _, want := range []string{src, "bench/tcppeer/go.mod", "--src", "root of a netchan source tree"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("--out %s: %v, want nothing written", out, err)
	}
}

// TestBenchPeerNoGo: with the source tree there but no go command on PATH, the error names the
// go command and PATH.
func TestBenchPeerNoGo(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "bench", "tcppeer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "bench", "tcppeer", "go.mod"), []byte("module example.com/tcppeer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	err := cmdBenchPeer([]string{"-src=" + src, "--out", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "go command is not on PATH") {
		t.Fatalf("error %v, want the go command missing from PATH", err)
	}
}

// TestPeerArgs: --src and --out (either dash count, with = or a separate value) are bench
// peer's; every other argument goes to tcppeer in order; -json is refused.
func TestPeerArgs(t *testing.T) {
	src, out, rest, help, err := peerArgs([]string{"-runs", "3", "--src", "/s", "-gvisor-defaults", "-out=/o", "-loss", "0"})
	if err != nil || src != "/s" || out != "/o" || help || !slices.Equal(rest, []string{"-runs", "3", "-gvisor-defaults", "-loss", "0"}) {
		t.Errorf("src %q out %q rest %q help %v err %v", src, out, rest, help, err)
	}
	src, out, rest, _, err = peerArgs(nil)
	if err != nil || src != "." || out != "bench/results" || len(rest) != 0 {
		t.Errorf("defaults: src %q out %q rest %q err %v", src, out, rest, err)
	}
	if _, _, _, help, _ := peerArgs([]string{"-runs", "1", "-h"}); !help {
		t.Error("-h is not help")
	}
	if _, _, _, _, err := peerArgs([]string{"-json", "x.json"}); err == nil || !strings.Contains(err.Error(), "--out") {
		t.Errorf("-json: %v", err)
	}
	if _, _, _, _, err := peerArgs([]string{"--src"}); err == nil {
		t.Error("--src without a value was accepted")
	}
}
