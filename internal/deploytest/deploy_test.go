package deploytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/runtime/caps"
)

// deployDir is docs/deploy, from this package's directory.
var deployDir = filepath.Join("..", "..", "docs", "deploy")

const (
	manifestFile = "netchan-daemonset.yaml"
	seccompFile  = "netchan-seccomp.json"
)

// manifest is the manifest's objects, each decoded strictly.
type manifest struct {
	namespace *corev1.Namespace
	configMap *corev1.ConfigMap
	daemonSet *appsv1.DaemonSet
}

// readManifest decodes every document of the manifest into its Kubernetes API type: unknown
// or misplaced fields, duplicate keys and kinds other than the three expected fail.
func readManifest(t *testing.T) manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir, manifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	for i, doc := range splitYAML(data) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 Namespace":
			if m.namespace != nil {
				t.Fatalf("document %d: a second Namespace", i)
			}
			m.namespace = new(corev1.Namespace)
			obj = m.namespace
		case "v1 ConfigMap":
			if m.configMap != nil {
				t.Fatalf("document %d: a second ConfigMap", i)
			}
			m.configMap = new(corev1.ConfigMap)
			obj = m.configMap
		case "apps/v1 DaemonSet":
			if m.daemonSet != nil {
				t.Fatalf("document %d: a second DaemonSet", i)
			}
			m.daemonSet = new(appsv1.DaemonSet)
			obj = m.daemonSet
		default:
			t.Fatalf("document %d: unexpected %s %s", i, meta.APIVersion, meta.Kind)
		}
		if err := decodeStrict(doc, obj); err != nil {
			t.Fatalf("document %d (%s): strict decoding: %v", i, meta.Kind, err)
		}
	}
	if m.namespace == nil || m.configMap == nil || m.daemonSet == nil {
		t.Fatalf("%s: want a Namespace, a ConfigMap and a DaemonSet", manifestFile)
	}
	return m
}

// decodeStrict decodes one YAML document into obj as the API server's strict field
// validation does: YAML to JSON refusing duplicate keys, then sigs.k8s.io/json, which matches
// field names case-sensitively (encoding/json, and so yaml.UnmarshalStrict, would take
// "readonly" for "readOnly") and reports unknown and duplicate fields.
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// splitYAML splits a YAML stream at its "---" lines and leaves out documents that hold only
// comments.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		for _, line := range strings.Split(cur.String(), "\n") {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				docs = append(docs, bytes.Clone(cur.Bytes()))
				break
			}
		}
		cur.Reset()
	}
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if strings.TrimRight(line, " \r\n") == "---" {
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return docs
}

// TestStrictDecodingRefusesUnknownFields: the decoding the manifest test relies on does
// refuse a misspelt field, a field at the wrong level, a field in the wrong case and a
// duplicate key, and accepts the right spelling.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      hostNetwrok: true\n",
		"apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  hostNetwork: true\n",
		"apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      hostnetwork: true\n",
		"apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      hostNetwork: true\n      hostNetwork: false\n",
	} {
		var ds appsv1.DaemonSet
		if err := decodeStrict([]byte(doc), &ds); err == nil {
			t.Errorf("decodeStrict accepted:\n%s", doc)
		}
	}
	var ds appsv1.DaemonSet
	if err := decodeStrict([]byte("apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      hostNetwork: true\n"), &ds); err != nil || !ds.Spec.Template.Spec.HostNetwork {
		t.Errorf("decodeStrict of a right document: %v, hostNetwork %v", err, ds.Spec.Template.Spec.HostNetwork)
	}
}

// TestDaemonSet checks the DaemonSet's networking, privileges, seccomp reference, probe,
// configuration and resources.
func TestDaemonSet(t *testing.T) {
	m := readManifest(t)
	ds := m.daemonSet
	if ds.Namespace != m.namespace.Name || m.configMap.Namespace != m.namespace.Name {
		t.Errorf("namespaces: DaemonSet %q, ConfigMap %q, Namespace %q", ds.Namespace, m.configMap.Namespace, m.namespace.Name)
	}
	if got := m.namespace.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace's pod-security enforce level %q: hostNetwork and added capabilities need privileged", got)
	}
	pod := ds.Spec.Template.Spec
	if ds.Spec.Selector == nil {
		t.Fatal("no selector")
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the template's labels %v", k, v, ds.Spec.Template.Labels)
		}
	}
	if !pod.HostNetwork {
		t.Error("hostNetwork is not true: AF_XDP and XDP need the node's interfaces")
	}
	if pod.HostPID || pod.HostIPC {
		t.Errorf("hostPID %v, hostIPC %v: want neither", pod.HostPID, pod.HostIPC)
	}
	if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy %q, want ClusterFirstWithHostNet with hostNetwork", pod.DNSPolicy)
	}
	if len(pod.InitContainers) != 0 || len(pod.Containers) != 1 {
		t.Fatalf("%d init containers, %d containers: want only netchan's", len(pod.InitContainers), len(pod.Containers))
	}
	if psc := pod.SecurityContext; psc != nil && psc.SeccompProfile != nil {
		t.Errorf("the pod's securityContext sets a seccomp profile too: keep it on the container")
	}
	c := pod.Containers[0]
	if c.Image != "docker.io/library/netchan:latest" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q, pull policy %q: want the loaded image (internal/image's default tag) and IfNotPresent", c.Image, c.ImagePullPolicy)
	}

	// Privileges.
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("the container has no securityContext")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("privileged is not false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.Capabilities == nil {
		t.Fatal("no capabilities")
	}
	var want []corev1.Capability
	for _, cp := range caps.Needed {
		want = append(want, corev1.Capability(strings.TrimPrefix(cp.Name, "CAP_")))
	}
	// IPC_LOCK is optional for netchan, but without it the UMEM counts against RLIMIT_MEMLOCK.
	// PERFMON: with CAP_BPF alone the verifier refuses the XDP program's variable-offset
	// packet pointer arithmetic (no Spectre v1 bypass without CAP_PERFMON), which running
	// the image under runc with exactly the other capabilities showed on kernel 6.18.
	want = append(want, "IPC_LOCK", "PERFMON")
	add := slices.Clone(sc.Capabilities.Add)
	slices.Sort(add)
	slices.Sort(want)
	want = slices.Compact(want) // caps.Needed may come to name PERFMON itself
	if !slices.Equal(add, want) {
		t.Errorf("capabilities added %v, want exactly %v", add, want)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities dropped %v, want [ALL]", sc.Capabilities.Drop)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser is not 0: Kubernetes makes added capabilities effective for root only")
	}

	// Seccomp: the container's profile is the file shipped beside the manifest.
	sp := sc.SeccompProfile
	if sp == nil || sp.Type != corev1.SeccompProfileTypeLocalhost || sp.LocalhostProfile == nil {
		t.Fatalf("seccompProfile %+v: want type Localhost with a localhostProfile", sp)
	}
	if path.Base(*sp.LocalhostProfile) != seccompFile {
		t.Errorf("localhostProfile %q does not name %s", *sp.LocalhostProfile, seccompFile)
	}
	if _, err := os.Stat(filepath.Join(deployDir, path.Base(*sp.LocalhostProfile))); err != nil {
		t.Errorf("the profile the manifest names is not shipped: %v", err)
	}

	// The command: run on $(IFACE), the ConfigMap's file, one instance name throughout.
	if len(c.Command) != 0 {
		t.Errorf("command %q overrides the image's entrypoint (/netchan): give args only", c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "run" {
		t.Fatalf("args %q: want netchan run ...", c.Args)
	}
	if flagValue(c.Args, "--iface") != "$(IFACE)" || !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "IFACE" && e.Value != "" }) {
		t.Errorf("args %q, env %v: want --iface $(IFACE) and IFACE set", c.Args, c.Env)
	}
	instance := flagValue(c.Args, "--instance")
	cfgPath := flagValue(c.Args, "--config")
	if cfgPath == "" {
		t.Fatalf("args %q: no --config", c.Args)
	}
	cfg := configFromVolume(t, pod, c, m.configMap, cfgPath)
	if instance == "" {
		instance = cfg.Instance
	}
	if cfg.Instance != instance {
		t.Errorf("the config's instance %q differs from --instance %q", cfg.Instance, instance)
	}

	// Readiness: netchan status of that instance, which reads its control socket.
	rp := c.ReadinessProbe
	if rp == nil || rp.Exec == nil {
		t.Fatal("no exec readiness probe")
	}
	if wantCmd := []string{"/netchan", "status", "--instance", instance}; !slices.Equal(rp.Exec.Command, wantCmd) {
		t.Errorf("readiness probe %q, want %q", rp.Exec.Command, wantCmd)
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
		return vm.MountPath == "/run/netchan" && !vm.ReadOnly
	}) {
		t.Error("/run/netchan (the control socket's directory) is not mounted writable: the root filesystem is read-only")
	}

	// Resources: requests equal to limits, whole CPUs (Guaranteed QoS, exclusive cores).
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || req.Cmp(lim) != 0 {
			t.Errorf("%s: request %s, limit %s: want equal and set", r, req.String(), lim.String())
		}
	}
	cpu := c.Resources.Limits[corev1.ResourceCPU]
	if cpu.Cmp(*resource.NewQuantity(cpu.Value(), resource.DecimalSI)) != 0 {
		t.Errorf("cpu %s is not a whole number of CPUs", cpu.String())
	}
}

// flagValue is the value after flag in args ("" if absent).
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// configFromVolume finds the ConfigMap key that the container sees at cfgPath and parses it
// with netchan's own configuration parser (strict: unknown fields are errors).
func configFromVolume(t *testing.T, pod corev1.PodSpec, c corev1.Container, cm *corev1.ConfigMap, cfgPath string) *config.Config {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(cfgPath, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			if v.ConfigMap.Name != cm.Name {
				t.Fatalf("volume %s is ConfigMap %q, the manifest's is %q", v.Name, v.ConfigMap.Name, cm.Name)
			}
			data, ok := cm.Data[rel]
			if !ok {
				t.Fatalf("ConfigMap %s has no key %q for --config %s", cm.Name, rel, cfgPath)
			}
			cfg, err := config.Parse(strings.NewReader(data))
			if err != nil {
				t.Fatalf("ConfigMap %s key %s: %v", cm.Name, rel, err)
			}
			return cfg
		}
	}
	t.Fatalf("--config %s is on no ConfigMap volume of the container", cfgPath)
	return nil
}

// seccompProfile is the OCI runtime specification's LinuxSeccomp, as containerd and CRI-O
// read a Localhost profile.
type seccompProfile struct {
	DefaultAction    string           `json:"defaultAction"`
	DefaultErrnoRet  *uint            `json:"defaultErrnoRet,omitempty"`
	Architectures    []string         `json:"architectures,omitempty"`
	Flags            []string         `json:"flags,omitempty"`
	ListenerPath     string           `json:"listenerPath,omitempty"`
	ListenerMetadata string           `json:"listenerMetadata,omitempty"`
	Syscalls         []seccompSyscall `json:"syscalls,omitempty"`
}

type seccompSyscall struct {
	Names    []string     `json:"names"`
	Action   string       `json:"action"`
	ErrnoRet *uint        `json:"errnoRet,omitempty"`
	Args     []seccompArg `json:"args,omitempty"`
}

type seccompArg struct {
	Index    uint   `json:"index"`
	Value    uint64 `json:"value"`
	ValueTwo uint64 `json:"valueTwo,omitempty"`
	Op       string `json:"op"`
}

// afXDP is AF_XDP's address family number.
const afXDP = 44

// TestSeccompProfile checks that the profile is an allow-list (everything not listed fails
// with an errno) that admits bpf(2), the calls of AF_XDP and of the Go runtime, opens sockets
// only of the families netchan uses, and refuses what a packet processor never needs.
func TestSeccompProfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, seccompFile))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p seccompProfile
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: %v", seccompFile, err)
	}
	if dec.More() {
		t.Fatalf("%s: more than one JSON value", seccompFile)
	}
	if p.DefaultAction != "SCMP_ACT_ERRNO" {
		t.Fatalf("defaultAction %q, want SCMP_ACT_ERRNO (an allow-list)", p.DefaultAction)
	}
	validActions := []string{"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}
	validOps := []string{"SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_MASKED_EQ"}
	unconditional := map[string]bool{}       // allowed whatever the arguments
	conditional := map[string][]seccompArg{} // allowed for some arguments: one rule each
	for i, r := range p.Syscalls {
		if !slices.Contains(validActions, r.Action) {
			t.Errorf("syscalls[%d]: action %q", i, r.Action)
		}
		for _, a := range r.Args {
			if !slices.Contains(validOps, a.Op) {
				t.Errorf("syscalls[%d]: op %q", i, a.Op)
			}
		}
		if len(r.Names) == 0 {
			t.Errorf("syscalls[%d] names no system call", i)
		}
		if r.Action != "SCMP_ACT_ALLOW" {
			continue
		}
		for _, n := range r.Names {
			switch {
			case len(r.Args) == 0 && unconditional[n]:
				t.Errorf("%s is allowed twice", n)
			case len(r.Args) == 0:
				unconditional[n] = true
			case len(r.Args) == 1:
				conditional[n] = append(conditional[n], r.Args[0])
			default:
				t.Errorf("syscalls[%d]: %d argument conditions: the test reads one", i, len(r.Args))
			}
		}
	}
	for n := range conditional {
		if unconditional[n] {
			t.Errorf("%s is allowed both with and without conditions", n)
		}
	}

	for _, n := range []string{
		"bpf",                                                // the XDP program and its maps, the bpf_link
		"setsockopt", "getsockopt", "bind", "mmap", "munmap", // AF_XDP: UMEM and rings, XDP_STATISTICS
		"sendto", "recvfrom", "poll", "ppoll", // AF_XDP: tx kick, wake-ups
		"epoll_create1", "epoll_ctl", "epoll_pwait", "eventfd2", // Go's netpoller, where idle shards sleep
		"ioctl",                             // ethtool: queues, offloads
		"sendmsg", "recvmsg", "getsockname", // netlink
		"sched_setaffinity", "sched_getaffinity", "getcpu", // pinning shards
		"mlock", "munlock", // locked memory
		"connect", "accept4", "listen", // the control socket, metrics
		"execve", "futex", "clone", "mprotect", "madvise", "tgkill", "rt_sigaction", "rt_sigprocmask", "sigaltstack", "rt_sigreturn", "exit_group", "nanosleep", "getrandom",
		"openat", "read", "write", "close", "fcntl", "newfstatat", "fstat", "unlinkat", "mkdirat", "uname", "prlimit64",
	} {
		if !unconditional[n] && len(conditional[n]) == 0 {
			t.Errorf("%s is not allowed", n)
		}
	}
	for _, n := range []string{
		"mount", "umount2", "pivot_root", "unshare", "setns", "ptrace", "process_vm_readv", "process_vm_writev",
		"kexec_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "acct",
		"keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup", "perf_event_open", "open_by_handle_at",
	} {
		if unconditional[n] || len(conditional[n]) > 0 {
			t.Errorf("%s is allowed: netchan never calls it", n)
		}
	}

	// socket(2): only netchan's families, AF_XDP among them.
	if unconditional["socket"] {
		t.Fatal("socket is allowed for every address family")
	}
	var families []uint64
	for _, a := range conditional["socket"] {
		if a.Index != 0 || a.Op != "SCMP_CMP_EQ" {
			t.Errorf("socket rule %+v: want a family (argument 0) compared for equality", a)
			continue
		}
		families = append(families, a.Value)
	}
	slices.Sort(families)
	if want := []uint64{1, 2, 10, 16, afXDP}; !slices.Equal(families, want) {
		t.Errorf("socket families %v, want %v (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_XDP)", families, want)
	}
	// clone(2): threads yes, new namespaces no.
	for _, a := range conditional["clone"] {
		const newNamespaces = 0x7E020000 // CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
		if a.Index != 0 || a.Op != "SCMP_CMP_MASKED_EQ" || a.Value != newNamespaces || a.ValueTwo != 0 {
			t.Errorf("clone rule %+v: want the namespace flags masked to zero", a)
		}
	}
}
