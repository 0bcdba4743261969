package cpu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/klauspost/cpuid/v2"
)

// sysCPU is the sysfs directory that describes the processors.
const sysCPU = "/sys/devices/system/cpu"

// CPU is one logical processor (a hardware thread) as Linux numbers it.
type CPU struct {
	ID      int // logical CPU number: N in /sys/devices/system/cpu/cpuN and in affinity masks
	Core    int // topology/core_id: unique within a package only; -1 if sysfs does not say
	Package int // topology/physical_package_id (the socket); -1 if sysfs does not say
	Node    int // NUMA node from the cpuN/nodeX link; 0 if the kernel reports none
}

// Topology describes the processors this process may run on.
type Topology struct {
	Vendor     string // cpuid vendor string, e.g. "GenuineIntel", "AuthenticAMD"
	Brand      string // cpuid brand string
	Hypervisor string // cpuid hypervisor vendor, "" on bare metal or if not reported

	// PhysicalCores, LogicalCores and ThreadsPerCore are cpuid's view of one package. In a VM,
	// a container or a multi-socket machine they need not match len(CPUs) (a 2-vCPU bhyve guest
	// reports the host's 254 cores); when cpuid cannot tell (0), they are counted from CPUs
	// instead. For placing shards use CPUs and [Topology.Cores].
	PhysicalCores  int
	LogicalCores   int
	ThreadsPerCore int

	CacheLine int      // bytes, 0 if unknown
	Features  []string // cpuid feature names (e.g. "AVX2", "AVX512F", "SSE4"), sorted

	// CPUs are the online CPUs in this process's affinity mask, sorted by ID. These are the
	// CPUs a shard can be pinned to.
	CPUs []CPU
}

// Detect reads the processor topology: vendor, brand, counts and features from cpuid, and ids
// for each online CPU in the process's affinity mask from sysfs.
func Detect() (Topology, error) {
	allowed, err := Allowed()
	if err != nil {
		return Topology{}, err
	}
	cpus, err := readCPUs(sysCPU, allowed)
	if err != nil {
		return Topology{}, err
	}
	c := &cpuid.CPU
	t := Topology{
		Vendor:         c.VendorString,
		Brand:          strings.TrimSpace(c.BrandName),
		Hypervisor:     strings.TrimSpace(c.HypervisorVendorString),
		PhysicalCores:  c.PhysicalCores,
		LogicalCores:   c.LogicalCores,
		ThreadsPerCore: c.ThreadsPerCore,
		CacheLine:      c.CacheLine,
		Features:       c.FeatureSet(),
		CPUs:           cpus,
	}
	slices.Sort(t.Features)
	if t.LogicalCores == 0 {
		t.LogicalCores = len(cpus)
	}
	if t.PhysicalCores == 0 {
		t.PhysicalCores = countCores(cpus)
	}
	if t.ThreadsPerCore == 0 {
		t.ThreadsPerCore = 1
	}
	return t, nil
}

// Cores returns the number of distinct physical cores among CPUs (distinct package and core id
// pairs; a CPU whose ids are unknown counts as a core of its own).
func (t Topology) Cores() int { return countCores(t.CPUs) }

// Has reports whether cpuid lists the named feature (as spelled by cpuid, e.g. "AVX2").
func (t Topology) Has(feature string) bool {
	_, found := slices.BinarySearch(t.Features, feature)
	return found
}

// String returns a header line (vendor, brand, counts, the vector features netchan cares about)
// followed by one line per CPU.
func (t Topology) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", orUnknown(t.Vendor), t.Brand)
	if t.Hypervisor != "" {
		fmt.Fprintf(&b, " under %s", t.Hypervisor)
	}
	fmt.Fprintf(&b, ": cpuid %d physical cores, %d logical, %d per core; AVX2 %s, AVX512F %s, GFNI %s; usable: %d CPUs on %d cores\n",
		t.PhysicalCores, t.LogicalCores, t.ThreadsPerCore,
		yesNo(t.Has("AVX2")), yesNo(t.Has("AVX512F")), yesNo(t.Has("GFNI")), len(t.CPUs), t.Cores())
	for _, c := range t.CPUs {
		fmt.Fprintf(&b, "cpu%d: core %s, package %s, node %d\n", c.ID, idString(c.Core), idString(c.Package), c.Node)
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown vendor"
	}
	return s
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

func idString(id int) string {
	if id < 0 {
		return "?"
	}
	return strconv.Itoa(id)
}

// countCores counts distinct (package, core) pairs; a CPU with unknown ids counts as its own core.
func countCores(cpus []CPU) int {
	type key struct{ pkg, core, id int }
	seen := make(map[key]bool, len(cpus))
	for _, c := range cpus {
		k := key{c.Package, c.Core, -1}
		if c.Core < 0 || c.Package < 0 {
			k.id = c.ID
		}
		seen[k] = true
	}
	return len(seen)
}

// readCPUs returns the CPUs of allowed that are online according to the sysfs tree at root,
// sorted by ID, with their core, package and node ids.
func readCPUs(root string, allowed []int) ([]CPU, error) {
	online, err := readCPUList(filepath.Join(root, "online"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		online = nil // no sysfs (or a very old kernel): trust the affinity mask
	case err != nil:
		return nil, err
	}
	cpus := make([]CPU, 0, len(allowed))
	for _, id := range allowed {
		if online != nil && !slices.Contains(online, id) {
			continue
		}
		dir := filepath.Join(root, "cpu"+strconv.Itoa(id))
		c := CPU{
			ID:      id,
			Core:    readInt(filepath.Join(dir, "topology", "core_id")),
			Package: readInt(filepath.Join(dir, "topology", "physical_package_id")),
			Node:    readNode(dir),
		}
		cpus = append(cpus, c)
	}
	slices.SortFunc(cpus, func(a, b CPU) int { return a.ID - b.ID })
	if len(cpus) == 0 {
		return nil, fmt.Errorf("cpu: none of the allowed CPUs [%s] is online (sysfs %s)", FormatList(allowed), root)
	}
	return cpus, nil
}

// readInt reads a file holding one decimal integer; -1 if it is missing or malformed.
func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return v
}

// readNode finds the nodeN entry in a cpuN directory; 0 if there is none (no NUMA).
func readNode(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), "node")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(name); err == nil && n >= 0 {
			return n
		}
	}
	return 0
}

func readCPUList(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cpu: reading CPU list: %w", err)
	}
	l, err := ParseList(string(b))
	if err != nil {
		return nil, fmt.Errorf("cpu: %s: %w", path, err)
	}
	return l, nil
}

// ParseList parses the kernel's CPU list format ("0-3,8,10-11", as in
// /sys/devices/system/cpu/online or taskset -c) into sorted, distinct CPU numbers. Surrounding
// white space is ignored; an empty list is valid.
func ParseList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return []int{}, nil
	}
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		loS, hiS, isRange := strings.Cut(part, "-")
		lo, err := strconv.Atoi(loS)
		if err != nil || lo < 0 {
			return nil, fmt.Errorf("bad CPU list %q: %q is not a CPU number or range", s, part)
		}
		hi := lo
		if isRange {
			hi, err = strconv.Atoi(hiS)
			if err != nil || hi < lo {
				return nil, fmt.Errorf("bad CPU list %q: %q is not a CPU number or range", s, part)
			}
		}
		if hi-lo > 1<<20 {
			return nil, fmt.Errorf("bad CPU list %q: range %q is implausibly large", s, part)
		}
		for c := lo; c <= hi; c++ {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// FormatList formats CPU numbers in the kernel's list format, e.g. "0-3,8", the inverse of
// [ParseList]. The input need not be sorted; duplicates are dropped; no CPUs give "".
func FormatList(cpus []int) string {
	s := slices.Clone(cpus)
	slices.Sort(s)
	s = slices.Compact(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(s[j]))
		}
		i = j + 1
	}
	return b.String()
}
