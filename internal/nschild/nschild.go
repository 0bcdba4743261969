// Package nschild lets a test binary run a function of its own inside a network namespace: the
// test re-executes itself under `ip netns exec NS` with an environment variable naming the
// function, so no goroutine of the test ever switches namespaces (setns is per thread, and
// the Go runtime moves goroutines between threads).
package nschild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
)

const env = "NETCHAN_NSCHILD"

var funcs = map[string]func(args []string) error{}

// Register names a function a child can run; call it from init or TestMain before RunIfChild.
func Register(name string, f func(args []string) error) { funcs[name] = f }

// RunIfChild runs the named function and exits when this process is a child; call it first
// thing in TestMain.
func RunIfChild() {
	name := os.Getenv(env)
	if name == "" {
		return
	}
	f, ok := funcs[name]
	if !ok {
		names := make([]string, 0, len(funcs))
		for n := range funcs {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "nschild: no function %q (have %s)\n", name, strings.Join(names, ", "))
		os.Exit(2)
	}
	if err := f(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nschild:", name+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Command runs function name with args inside namespace ns.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, exe}, args...)...)
	cmd.Env = append(os.Environ(), env+"="+name)
	return cmd
}
