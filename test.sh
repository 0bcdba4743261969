#!/usr/bin/env bash
# netchan's test suite: the README's test command, and what .ci/run calls.
#   1. go vet and gofmt
#   2. unit tests with -race -short (lab tests step aside under -short)
#   3. allocation checks without -race (the race detector allocates on its own)
#   4. lab tests: real namespaces, veths, XDP and AF_XDP; no -race, one package at a time
# Needs root, iproute2, ethtool, procps (sysctl), util-linux (setpriv), iputils-ping, iptables,
# nftables, curl, tcpdump and wrk: .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
	echo "test.sh: lab tests build network namespaces and attach XDP programs: run as root (sudo ./test.sh)" >&2
	exit 1
fi
for tool in ip ethtool sysctl setpriv ping iptables nft curl tcpdump wrk tmux; do
	command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing: apt-get install iproute2 ethtool procps util-linux iputils-ping iptables nftables curl tcpdump wrk tmux" >&2; exit 1; }
done

# phase NAME CMD...: runs one phase, its output shown as it comes and kept; when it fails, the
# run ends with the phase's name and every failing test, package and panic in it, so that the
# last lines of a CI log say what failed.
phase() {
	local name=$1
	shift
	echo "== $name"
	local out
	out=$(mktemp)
	if "$@" 2>&1 | tee "$out"; then
		rm -f "$out"
		return 0
	fi
	echo
	echo "test.sh: FAILED in phase \"$name\": $*"
	grep -E -e '^\s*--- FAIL' -e '^FAIL' -e '^panic:' -e '^(vet|go): ' -e 'gofmt would change' "$out" | awk '!seen[$0]++' | sed 's/^/  /' || true
	rm -f "$out"
	exit 1
}

vet() {
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
	if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; return 1; fi
	go vet ./...
}

phase "vet" vet
phase "unit tests (-race -short)" go test -race -short -count=1 ./...
# bench/tcppeer is its own module: netchan's TCP against gVisor's netstack, short runs checked by SHA-256.
phase "bench/tcppeer" bash -c 'cd bench/tcppeer && go vet . && go test -short -count=1 .'
phase "allocation checks (no -race)" go test -short -count=1 -run 'Allocs' ./...
phase "lab tests (-p 1, no -race)" go test -p 1 -count=1 -timeout 20m ./...
