#!/usr/bin/env bash
# netchan's test suite: the README's test command, and what .ci/run calls.
#   1. go vet and gofmt
#   2. unit tests with -race -short (lab tests step aside under -short)
#   3. allocation checks without -race (the race detector allocates on its own)
#   4. fuzzing: every fuzz target of the module, found by go test -list, for NETCHAN_FUZZTIME
#      each (a go test -fuzztime value; default 10s), one after another
#   5. lab tests: real namespaces, veths, XDP and AF_XDP; no -race, one package at a time
#      (the soak, TestLabSoak, runs 2 minutes here; NETCHAN_SOAK=30m makes it longer)
# NETCHAN_STRESS=N runs the stress job instead (see below).
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

# fuzz runs every fuzz target of the module for $NETCHAN_FUZZTIME (default 10s) each. The
# targets are found, not listed here: go test -list names them in each package whose test
# files declare a func Fuzz..., so a new target runs without anyone adding it. go test -fuzz
# takes one target of one package per run, so they run one after another. Minimizing an
# input is capped at 1000 runs (the default is a minute, which a slow target's new-coverage
# inputs would take out of a short budget). A failure names
# the target and the input go test wrote under the package's testdata/fuzz/: fix the bug and
# commit that file, and every go test run replays it.
fuzz() {
	local budget=${NETCHAN_FUZZTIME:-10s} start=$SECONDS pkg dir files name log input why n=0
	local -a pkgs=() failed=()
	while read -r pkg dir files; do
		if [ -n "$files" ] && (cd "$dir" && grep -q '^func Fuzz' $files); then
			pkgs+=("$pkg")
		fi
	done < <(go list -f '{{.ImportPath}} {{.Dir}}{{range .TestGoFiles}} {{.}}{{end}}{{range .XTestGoFiles}} {{.}}{{end}}' ./...)
	local targets
	if ! targets=$(go test -list '^Fuzz' "${pkgs[@]}" | awk '/^Fuzz/ { names[n++] = $1; next } /^ok/ { for (i = 0; i < n; i++) print $2, names[i]; n = 0 }'); then
		echo "FAIL: go test -list could not list the fuzz targets"
		return 1
	fi
	while read -r pkg name; do
		[ -n "$name" ] || continue
		n=$((n + 1))
		dir=$(go list -f '{{.Dir}}' "$pkg")
		dir=${dir#"$PWD"/}
		echo "-- $name ($pkg) for $budget"
		log=$(mktemp)
		if ! go test -run '^$' -fuzz "^$name\$" -fuzztime "$budget" -fuzzminimizetime 1000x "$pkg" </dev/null 2>&1 | tee "$log"; then
			if ! grep -q 'Failing input written to' "$log" &&
				[ "$(grep -E -A 1 "^--- FAIL: $name " "$log" | sed -n '2s/^\s*//p')" = "context deadline exceeded" ]; then
				# Go's coordinator can take the end of -fuzztime for an error (golang/go#75804,
				# fixed in Go 1.27): the run stopped, no input failed.
				echo "test.sh: $name ended with Go's spurious \"context deadline exceeded\" at the end of its time (golang/go#75804): not a failure"
				rm -f "$log"
				continue
			fi
			input=$(sed -n 's/.*Failing input written to \(testdata\/fuzz\/[^ ]*\).*/\1/p' "$log" | head -n 1)
			why=$(grep -E -m 1 -A 1 '^\s+--- FAIL' "$log" | tail -n 1 | sed 's/^\s*//' || true)
			if [ -n "$input" ]; then
				failed+=("FAIL: fuzz target $name ($pkg): ${why:+$why; }failing input $dir/$input; again: go test -run '$name/${input##*/}' ./$dir")
			else
				failed+=("FAIL: fuzz target $name ($pkg) failed without a failing input${why:+: $why} (see its output above)")
			fi
		fi
		rm -f "$log"
	done <<<"$targets"
	echo "fuzz: $n targets, $budget each, in $((SECONDS - start)) s"
	if [ "$n" -eq 0 ]; then
		echo "FAIL: no fuzz targets found"
		return 1
	fi
	if [ ${#failed[@]} -gt 0 ]; then
		printf '%s\n' "${failed[@]}"
		return 1
	fi
}

# The stress job (NETCHAN_STRESS=N ./test.sh): instead of the phases below, vet and then the
# lab phase N times in a row, each round a whole run of every package as CI's lab phase runs
# them, stopping at the first failure (which names its round). It is how flaky tests are found;
# a flaky test is fixed, not retried. About 10 minutes a round on a 2-core machine.
if [ -n "${NETCHAN_STRESS:-}" ]; then
	case $NETCHAN_STRESS in
	'' | *[!0-9]* | 0) echo "test.sh: NETCHAN_STRESS=$NETCHAN_STRESS: want a number of rounds, such as 5" >&2; exit 2 ;;
	esac
	phase "vet" vet
	start=$SECONDS
	for round in $(seq 1 "$NETCHAN_STRESS"); do
		phase "stress round $round of $NETCHAN_STRESS (lab tests, -p 1, no -race)" go test -p 1 -count=1 -timeout 20m ./...
	done
	echo "stress: $NETCHAN_STRESS rounds of the lab phase without a failure in $((SECONDS - start)) s"
	exit 0
fi

phase "vet" vet
phase "unit tests (-race -short)" go test -race -short -count=1 ./...
# bench/tcppeer is its own module: netchan's TCP against gVisor's netstack, short runs checked by SHA-256.
phase "bench/tcppeer" bash -c 'cd bench/tcppeer && go vet . && go test -short -count=1 .'
phase "allocation checks (no -race)" go test -short -count=1 -run 'Allocs' ./...
phase "fuzz (${NETCHAN_FUZZTIME:-10s} per target)" fuzz
phase "lab tests (-p 1, no -race)" go test -p 1 -count=1 -timeout 20m ./...
