// Package report is the core every netchan benchmark reports through: one JSON document
// format, one runner of interleaved variants × rounds, one summary (medians, ratios paired by
// round, contamination and outlier checks) and one Markdown table writer. `netchan bench`
// writes its documents to bench/results/; `netchan bench table` and bench/plot read them back.
//
// # The document (schema "netchan-bench/1")
//
// A Document is one benchmark run of one scenario (rx, reflect, nat, tcp-rr, http, peer,
// netchannel):
//
//	schema, scenario, command      what made it, to run it again
//	started, finished, machine     when and where (kernel, CPUs, CPU model, Go version)
//	options, setup                 the harness's own options (JSON) and a description of its set-up
//	rounds, cases, variants        the grid: every variant runs once per case in every round;
//	                               a case is a phase, a mode, an offered rate or a frame size, with
//	                               an optional number (x) along case_axis for plots
//	metrics                        what each run measured: name, unit, which way is better; the key
//	                               metric is the headline and the one outliers are judged on
//	runs                           every run, also the repeated, contaminated, failed and outlier
//	                               ones, each with its values and the harness's own record (detail)
//	figures                        per case and variant: median, min, max and values of each metric
//	                               over the runs that stand for their rounds
//	ratios                         named comparisons of two variants' medians in one case, with the
//	                               median of the ratios paired within each round and a target
//	flags                          what the summary noticed and acted on, in words
//
// The figures, ratios and flags are derived: Read recomputes them from the runs, so a document
// edited by hand (or a summary rule changed since) is judged by today's rules.
//
// # Which run stands for a round
//
// For each case, variant and round, the runs without an error are candidates: a clean one
// before a contaminated one (another process took more than the harness's limit of the measured
// core), the least contaminated first. Against the median of every run of its case and
// variant (all rounds and attempts, at least three), a run whose key metric is on the worse side
// by more than OutlierRule.Factor (below median/Factor where higher is better, above
// median×Factor where lower is better) is an outlier: it is left out, flagged with its value
// and the median, and its round's next candidate stands instead (the runner repeats a round
// left without one, at most twice). Judging against every run, not one per round, and only on
// the worse side keeps collapsed runs, even many, from making the good ones look odd. A
// collapsed round (4.8k packets/s among 375k) never reaches a median.
//
// # Running
//
// A harness builds a Document (scenario, cases, variants, metrics, ratios) and calls Execute with
// a Plan whose Measure runs one trial. Execute interleaves: each round runs every case, and in
// each case every variant, the order of variants reversed every second round; it repeats a
// contaminated run up to Plan.Retries times and a round left without a run by outliers at
// most twice, and reports progress (round, case, variant, runs done, time left) through
// Plan.Progress.
package report
