package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// state is the record StateDir/NAME.json keeps of a lab: written before Up
// creates anything, marked Complete when Up has finished.
type state struct {
	Config     Config
	Namespaces []string
	Links      []string // root-namespace links
	Owner      owner    // the process that last called Up
	Complete   bool
}

// owner identifies a process across PID reuse: its PID and its start time
// (field 22 of /proc/PID/stat).
type owner struct {
	PID   int
	Start string
}

func self() owner { return owner{os.Getpid(), startTime(os.Getpid())} }

func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // fields 3.. (comm may hold spaces)
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func (o owner) alive() bool { return o.PID > 0 && o.Start != "" && startTime(o.PID) == o.Start }

func statePath(name string) string { return filepath.Join(StateDir, name+".json") }

func readState(name string) (state, error) {
	var st state
	b, err := os.ReadFile(statePath(name))
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	return st, err
}

func writeState(st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return err
	}
	tmp := statePath(st.Config.Name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(st.Config.Name))
}

// Down removes lab name: the root links that carry its mark (deleting a veth
// end deletes its peer too), the namespaces its state file lists or whose lo
// carries its mark, and its state file. Removing a lab that does not exist
// is not an error.
func Down(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := checkRoot(); err != nil {
		return err
	}
	mark := markPrefix + name
	st, _ := readState(name) // missing or unreadable: rely on the marks alone
	var errs []error
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("lab: listing links: %w", err)
	}
	for _, link := range links {
		a := link.Attrs()
		if a.Alias == mark || (a.Alias == "" && slices.Contains(st.Links, a.Name)) {
			if err := netlink.LinkDel(link); err != nil && !errors.Is(err, syscall.ENODEV) {
				errs = append(errs, fmt.Errorf("deleting link %s: %w", a.Name, err))
			}
		}
	}
	for _, suffix := range nsSuffixes {
		ns := name + suffix
		if !slices.Contains(st.Namespaces, ns) && nsMark(ns) != mark {
			continue
		}
		if err := deleteNamespace(ns); err != nil {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns, err))
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(statePath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: down %s: %w", name, err)
	}
	return nil
}

// deleteNamespace does what `ip netns del` does: detach the bind mount that
// keeps the namespace alive and remove its file. The kernel frees the
// namespace, and the links in it, once nothing else holds it.
func deleteNamespace(ns string) error {
	path := "/run/netns/" + ns
	err := syscall.Unmount(path, syscall.MNT_DETACH)
	if err != nil && err != syscall.EINVAL && err != syscall.ENOENT { // EINVAL: not mounted
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// nsMark returns the alias of lo in namespace ns, or "" if ns does not exist.
func nsMark(ns string) string {
	fd, err := netns.GetFromName(ns)
	if err != nil {
		return ""
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return ""
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return ""
	}
	return lo.Attrs().Alias
}

// Sweep removes every lab whose name starts with prefix, live or not: for
// leftovers of killed runs. An empty prefix removes every lab on the machine.
func Sweep(prefix string) error { return sweep(prefix, false) }

// SweepOrphans removes the labs whose name starts with prefix and whose
// owner (the process that last called Up) has exited. Unlike Sweep it is
// safe while other processes use labs with that prefix.
func SweepOrphans(prefix string) error { return sweep(prefix, true) }

func sweep(prefix string, orphansOnly bool) error {
	if prefix != "" && ValidName(prefix) != nil {
		return fmt.Errorf("lab: sweep prefix %q: want up to 7 of [a-z0-9]", prefix)
	}
	if err := checkRoot(); err != nil {
		return err
	}
	names, err := labNames(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if st, err := readState(name); orphansOnly && err == nil && st.Owner.alive() {
			continue
		}
		errs = append(errs, Down(name))
	}
	return errors.Join(errs...)
}

// labNames finds the labs with prefix: from state files, from the marks on
// root links and from the marks on lo in namespaces.
func labNames(prefix string) ([]string, error) {
	var names []string
	add := func(name string) {
		if strings.HasPrefix(name, prefix) && ValidName(name) == nil && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	files, _ := filepath.Glob(filepath.Join(StateDir, "*.json"))
	for _, f := range files {
		add(strings.TrimSuffix(filepath.Base(f), ".json"))
	}
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("lab: listing links: %w", err)
	}
	for _, link := range links {
		if name, ok := strings.CutPrefix(link.Attrs().Alias, markPrefix); ok {
			add(name)
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		for _, suffix := range nsSuffixes {
			if name, ok := strings.CutSuffix(e.Name(), suffix); ok && strings.HasPrefix(name, prefix) && nsMark(e.Name()) == markPrefix+name {
				add(name)
			}
		}
	}
	return names, nil
}
