// Package deploytest holds the tests of netchan's deployment files in docs/deploy: the
// Kubernetes DaemonSet (netchan-daemonset.yaml), decoded strictly into the Kubernetes API
// types (k8s.io/api), and the seccomp profile it names (netchan-seccomp.json), decoded
// strictly as an OCI seccomp profile. The tests check what keeps the deployment honest:
// host networking; exactly the capabilities netchan needs (runtime/caps's, with CAP_IPC_LOCK
// and CAP_PERFMON, which the verifier wants for the XDP program) and every other one dropped;
// no privileged container; the seccomp profile's reference; an allow-list that admits bpf(2)
// and the AF_XDP calls and refuses the rest; and a config file that netchan's own parser
// accepts, read by the instance the readiness probe asks.
//
// The package has no code: it is a tool of the repository (internal/layers places it with
// the tools), and its Kubernetes dependencies are the tests' only.
package deploytest
