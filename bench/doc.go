// Package bench holds netchan's measurements: benchmark drivers and the results they keep under
// bench/results/ with the command that made them. The asavie/xdp module is pinned in go.mod for
// the comparison driver of the benchmark (an independent AF_XDP library measured side by side
// with netchan's own port).
package bench
