package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/lab/labtest"
)

// replacedTools are the programs netchan's own commands must not need (the tests may use them:
// .ci/run installs them).
var replacedTools = []string{"ethtool", "ping", "tcpdump"}

// toolPaths returns every place tool is installed on this machine (each directory of PATH and
// the usual bin directories, symlinks resolved, without repeats). It fails the test if there is
// none: the test must see the real tool to prove it is not called.
func toolPaths(t *testing.T, tool string) []string {
	t.Helper()
	dirs := append(filepath.SplitList(os.Getenv("PATH")), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
	var paths []string
	for _, dir := range dirs {
		p, err := filepath.EvalSymlinks(filepath.Join(dir, tool))
		if err != nil {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		t.Fatalf("%s is not installed: this test replaces it to prove netchan does not call it (.ci/run installs it)", tool)
	}
	return paths
}

// withoutTools returns a command that runs argv in a private mount namespace (unshare --mount)
// in which every installed ethtool, ping and tcpdump is bind-mounted over by a script that
// appends its name and arguments to record and exits 1. The mounts vanish with the namespace;
// namespaces made by `ip netns exec` inside it inherit them.
func withoutTools(t *testing.T, ctx context.Context, record string, argv ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (mount namespaces, bind mounts, netchan demo): run it as root")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("this test needs unshare (util-linux) for a private mount namespace: %v", err)
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Fatalf("this test needs mount (util-linux): %v", err)
	}
	fake := filepath.Join(t.TempDir(), "recording-fake")
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$0 $*\" >> %s\nexit 1\n", strconv.Quote(record))
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var sh strings.Builder
	sh.WriteString("set -e\n")
	for _, tool := range replacedTools {
		for _, p := range toolPaths(t, tool) {
			fmt.Fprintf(&sh, "mount --bind %s %s\n", strconv.Quote(fake), strconv.Quote(p))
		}
	}
	sh.WriteString(`exec "$@"` + "\n")
	return exec.CommandContext(ctx, unshare, append([]string{"--mount", "--propagation", "private", "sh", "-c", sh.String(), "sh"}, argv...)...)
}

func readRecord(t *testing.T, record string) string {
	t.Helper()
	b, err := os.ReadFile(record)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// TestDemoWithoutTools is the first five minutes on a fresh machine with Go and iproute2 but
// no ethtool, ping or tcpdump: `netchan demo` must exit 0 without calling any of them, and its
// output must still show byte-checked reflections and ping replies.
func TestDemoWithoutTools(t *testing.T) {
	labtest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	// The replacement works: each tool, called in the mount namespace (and in a network
	// namespace inside it), fails and is recorded.
	probe := filepath.Join(dir, "probe-record")
	ns := "nctools" + labtest.UniqueName(t)[:4]
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	cmd := withoutTools(t, ctx, probe, "sh", "-c",
		`ethtool -k lo; ping -c 1 127.0.0.1; tcpdump --version; ip netns exec "$1" ethtool -k lo; exit 0`, "sh", ns)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("probing the replaced tools: %v\n%s", err, out)
	}
	got := readRecord(t, probe)
	for _, want := range []string{"ethtool -k lo\n", "ping -c 1 127.0.0.1\n", "tcpdump --version\n"} {
		if !strings.Contains(got, want) {
			t.Fatalf("the replaced tools did not record %q; record:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "ethtool -k lo\n"); n != 2 {
		t.Fatalf("ethtool inside ip netns exec was not replaced (recorded %d times):\n%s", n, got)
	}

	// The demo, with the tools replaced.
	record := filepath.Join(dir, "record")
	cmd = withoutTools(t, ctx, record, binary, "demo", "--duration", "2s", "--instance", labtest.UniqueName(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("netchan demo without ethtool, ping and tcpdump: %v\n%s", err, out)
	}
	if got := readRecord(t, record); got != "" {
		t.Errorf("netchan demo called tools it must not need:\n%s", got)
	}
	s := string(out)
	reflected := regexp.MustCompile(`sender queue \d+: sent (\d+), reflected back (\d+) \(byte-checked\), mismatched 0,`).FindAllStringSubmatch(s, -1)
	if len(reflected) < 2 {
		t.Errorf("want a byte-checked reflection line per sender queue (2), found %d:\n%s", len(reflected), s)
	}
	for _, m := range reflected {
		if back, _ := strconv.Atoi(m[2]); back == 0 {
			t.Errorf("a sender got nothing back: %q", m[0])
		}
	}
	replies := regexp.MustCompile(`(?m)^64 bytes from 198\.18\.0\.1: icmp_seq=\d+ ttl=\d+ time=[0-9.]+ ms$`).FindAllString(s, -1)
	summary := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(s)
	if len(replies) == 0 || summary == nil || summary[2] == "0" || summary[2] != strconv.Itoa(len(replies)) {
		t.Errorf("want ping replies from 198.18.0.1 in the demo's output, found %d (summary %q):\n%s", len(replies), summary, s)
	}
}
