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

echo "== vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi
go vet ./...

echo "== unit tests (-race -short)"
go test -race -short -count=1 ./...

echo "== bench/tcppeer (its own module: netchan's TCP against gVisor's netstack, short runs checked by SHA-256)"
(cd bench/tcppeer && go vet . && go test -short -count=1 .)

echo "== allocation checks (no -race)"
go test -short -count=1 -run 'Allocs' ./...

echo "== lab tests (-p 1, no -race)"
go test -p 1 -count=1 -timeout 20m ./...
