package cpu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseList(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{in: "", want: []int{}},
		{in: "\n", want: []int{}},
		{in: "0", want: []int{0}},
		{in: "0-3\n", want: []int{0, 1, 2, 3}},
		{in: "0-1,4,6-7", want: []int{0, 1, 4, 6, 7}},
		{in: "5,1-2,2", want: []int{1, 2, 5}},
		{in: "3-3", want: []int{3}},
		{in: "a", wantErr: true},
		{in: "3-1", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "1,,2", wantErr: true},
		{in: "0-", wantErr: true},
		{in: "0-99999999", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseList(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseList(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseList(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatList(t *testing.T) {
	tests := []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{0}, "0"},
		{[]int{0, 1}, "0-1"},
		{[]int{3, 0, 1, 2, 8, 10, 11, 11}, "0-3,8,10-11"},
	}
	for _, tt := range tests {
		got := FormatList(tt.in)
		if got != tt.want {
			t.Errorf("FormatList(%v) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := ParseList(got)
		if err != nil {
			t.Errorf("ParseList(FormatList(%v)) error: %v", tt.in, err)
		}
		want := slices.Compact(slices.Sorted(slices.Values(tt.in)))
		if !slices.Equal(back, want) && len(want) > 0 {
			t.Errorf("round trip of %v gave %v", tt.in, back)
		}
	}
}

// fakeSysfs writes a /sys/devices/system/cpu look-alike: files maps relative paths to contents,
// dirs lists extra directories (the cpuN/nodeX links are directories here).
func fakeSysfs(t *testing.T, files map[string]string, dirs ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestReadCPUsFakeSysfs(t *testing.T) {
	// Two packages, two cores each, two threads per core; node links on package 1 only;
	// cpu7 offline; cpu2 has no topology directory.
	files := map[string]string{"online": "0-6\n"}
	for id := range 8 {
		if id == 2 {
			continue
		}
		dir := "cpu" + string(rune('0'+id))
		files[dir+"/topology/core_id"] = string(rune('0'+(id/2)%2)) + "\n"
		files[dir+"/topology/physical_package_id"] = string(rune('0'+id/4)) + "\n"
	}
	root := fakeSysfs(t, files, "cpu2", "cpu4/node1", "cpu5/node1", "cpu6/node1", "cpu6/power")

	tests := []struct {
		name    string
		allowed []int
		want    []CPU
		wantErr bool
	}{
		{
			name:    "all",
			allowed: []int{0, 1, 2, 3, 4, 5, 6, 7},
			want: []CPU{
				{ID: 0, Core: 0, Package: 0, Node: 0},
				{ID: 1, Core: 0, Package: 0, Node: 0},
				{ID: 2, Core: -1, Package: -1, Node: 0},
				{ID: 3, Core: 1, Package: 0, Node: 0},
				{ID: 4, Core: 0, Package: 1, Node: 1},
				{ID: 5, Core: 0, Package: 1, Node: 1},
				{ID: 6, Core: 1, Package: 1, Node: 1},
			},
		},
		{
			name:    "mask subset, unsorted",
			allowed: []int{6, 1},
			want: []CPU{
				{ID: 1, Core: 0, Package: 0, Node: 0},
				{ID: 6, Core: 1, Package: 1, Node: 1},
			},
		},
		{name: "only offline", allowed: []int{7}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readCPUs(root, tt.allowed)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("readCPUs = %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("readCPUs =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}

func TestReadCPUsNoSysfs(t *testing.T) {
	root := t.TempDir() // no "online" file: trust the mask, ids unknown
	got, err := readCPUs(root, []int{1, 0})
	if err != nil {
		t.Fatal(err)
	}
	want := []CPU{{ID: 0, Core: -1, Package: -1}, {ID: 1, Core: -1, Package: -1}}
	if !slices.Equal(got, want) {
		t.Errorf("readCPUs = %v, want %v", got, want)
	}
	if n := countCores(got); n != 2 {
		t.Errorf("countCores = %d, want 2 (unknown ids count as separate cores)", n)
	}
}

func TestTopologyString(t *testing.T) {
	top := Topology{
		Vendor: "GenuineIntel", Brand: "Test CPU", PhysicalCores: 1, LogicalCores: 2, ThreadsPerCore: 2,
		Features: []string{"AVX", "AVX2"},
		CPUs:     []CPU{{ID: 0, Core: 0, Package: 0}, {ID: 1, Core: 0, Package: 0, Node: 0}},
	}
	s := top.String()
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != 1+len(top.CPUs) {
		t.Fatalf("String() has %d lines, want %d:\n%s", len(lines), 1+len(top.CPUs), s)
	}
	for _, want := range []string{"GenuineIntel", "AVX2 yes", "AVX512F no"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header %q lacks %q", lines[0], want)
		}
	}
	if lines[2] != "cpu1: core 0, package 0, node 0" {
		t.Errorf("cpu line = %q", lines[2])
	}
}
