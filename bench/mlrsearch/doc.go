// Package mlrsearch is a throughput search per RFC 9971, Multiple Loss Ratio Search
// (MLRsearch, FD.io CSIT's method): one search finds the throughput for several goals at once,
// typically the NDR (no loss) and the PDR (0.5 % loss), from trials the caller performs. It
// follows the text of draft-ietf-bmwg-mlrsearch-15, the version published as RFC 9971.
//
// # Terms (RFC 9971)
//
//   - Trial: traffic at one Trial Load (intended load, per interface) for one Trial Duration.
//     Its loss ratio is (offered − forwarded) / offered; its forwarding rate is
//     load × (1 − loss ratio); its effective duration is what it counts for in sums (by
//     default its duration). Type Trial is the measurer, TrialResult its result.
//   - Search Goal (type Goal): a Goal Loss Ratio (a trial losing more is high-loss, otherwise
//     low-loss), a Goal Exceed Ratio (the share of high-loss time a load may have and still
//     meet the goal), a Goal Final Trial Duration (trials at least this long are full-length,
//     shorter ones short), a Goal Duration Sum (how much full-length trial time decides a
//     load), a Goal Initial Trial Duration (the shortest trials used early) and a Goal Width
//     (here relative: the search for the goal stops when upper − lower ≤ width × upper).
//   - Load Classification (Classify): from all trials at a load, for one goal, the load is a
//     Lower Bound (it meets the goal whatever the trials missing to the duration sum would
//     show), an Upper Bound (it fails whatever they would show) or Undecided. Short trials
//     count only through their excess of high-loss time over what the exceed ratio lets
//     short low-loss time balance.
//   - Relevant Upper Bound: the smallest load that is an upper bound. Relevant Lower Bound:
//     the largest load below it that is a lower bound (a lower bound above an upper bound,
//     loss inversion, is ignored: the search is conservative).
//   - Conditional Throughput (ConditionalThroughput): the forwarding rate at the relevant
//     lower bound of its full-length trial at the (1 − exceed ratio) quantile of time by loss
//     ratio; at most the goal's loss ratio below the load, and it is what a report should
//     compare across runs.
//   - Goal Result: regular when both relevant bounds exist within the goal's width; otherwise
//     irregular (Status says which case).
//
// # What is implemented
//
// Search (the RFC's Controller) takes a Config (Controller Input: goals, min and max load, a
// limit on the search duration) and a Trial (the Measurer), and returns a Result
// (Controller Output): for each goal its relevant bounds with their trials, its conditional
// throughput and its Status, and every trial made. Load classification and conditional
// throughput are the RFC's appendix algorithms, checked against the RFC's example search.
// Every trial counts for every goal. A search ends when every goal is regular or irregular
// for good (max load a lower bound: StatusNoUpperBound; min load an upper bound:
// StatusMinLoadUpperBound), when the next trial would take the search duration past
// Config.SearchDurationMax, when the context is done or when a trial fails.
//
// The defaults (NDR, PDR, the Default constants) are RFC 9971's recommended exceed ratio,
// 0.5, and CSIT's NDR/PDR values for the rest: width 0.5 %, 1-second trials, duration sum
// 21 s, search duration limit 20 minutes. LatencyLoads gives the loads at which CSIT measures
// latency after a search (10, 50 and 90 % of the PDR); SearchFrameSizes repeats a search for
// a list of frame sizes.
//
// # What is not, or is simplified
//
// The RFC leaves the choice of trial loads and durations to the implementation. The one here
// (described at the top of selector.go) follows the shape of CSIT's but is simpler: a fixed two coarse
// phases per goal (shorter trials, smaller duration sum, wider width) before the goal's own;
// external search with doubling steps and a forwarding-rate hint when a bound is missing;
// geometric bisection between the bounds; the lowest nominated load measured first. Loads
// are float64 in the caller's unit, not rounded to a grid as CSIT's are. There is no
// warm-up trial (CSIT can make one). The search duration is the sum of the trials' effective
// durations, not wall-clock time: a measurer whose overheads should count returns them as
// the effective duration. The width is relative only. Latency itself is not measured here,
// nor are frame sizes interpreted: the caller's trial does both.
package mlrsearch
