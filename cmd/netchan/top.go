package main

// netchan top: a live view of a running instance, from two fetches of its status an interval
// apart over the control socket. Plain ANSI (the alternate screen, cursor home, clear to the
// end of each line and of the screen), no TUI library; the frame fits 80 columns.
//
// What a frame shows, every figure a rate over the interval unless said otherwise:
//
//   - per shard: rx and tx packets/s and bits/s (frame bytes, no FCS), drops/s, hand-offs/s out
//     of and into the shard, busy % (busy_ns over busy_ns + idle_ns), and a line of drops/s by
//     reason for each shard that dropped (the kernel's per-socket drops as "kernel ...");
//   - the stages' runtime, summed over the shards (VPP's `show runtime`): calls/s, packets/s,
//     packets per call in the interval, ns/packet (the stage's own sampled average since start:
//     the status gives no total time to take a difference of) and drops/s;
//   - top flows: no status section publishes the flow trees' flows with per-flow counters today,
//     so top shows what exists: with the stack, its TCP connections (srtt, cwnd, retransmits)
//     ordered by the rate their window allows, cwnd/srtt; with the NAT, its counters as rates and
//     its mappings, those created in the last interval first (marked "new"), then the rest in
//     the flow tree's order, since a mapping carries no packet counter or last-seen time to sort
//     by recent activity.
//
// Netchannels do not exist yet, so top has nothing to show for them.

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/shards"
	"github.com/netchan/netchan/stack"
)

// topWidth is the widest a frame gets; a narrower terminal cuts its lines.
const topWidth = 80

// topOptions is what one run of top reads and how.
type topOptions struct {
	Dir      string // control socket directory ("" means control.DefaultDir)
	Instance string
	Interval time.Duration
}

// cmdTop shows a running instance's rates, live (or one frame with --once).
func cmdTop(args []string) error {
	fs := flag.NewFlagSet("top", flag.ContinueOnError)
	instance := fs.String("instance", config.DefaultInstance, "instance to watch (the --instance it was started with)")
	interval := fs.Duration("interval", time.Second, "time between frames (rates are over this interval)")
	once := fs.Bool("once", false, "print one frame (two fetches an interval apart) without terminal codes, and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: give the instance with --instance NAME", fs.Arg(0))
	}
	if err := config.ValidInstance(*instance); err != nil {
		return fmt.Errorf("--instance: %w", err)
	}
	if *interval < 100*time.Millisecond {
		return fmt.Errorf("--interval %v: want at least 100ms", *interval)
	}
	opt := topOptions{Instance: *instance, Interval: *interval}
	if *once {
		return topOnce(os.Stdout, opt)
	}
	return topLive(opt)
}

// topSample is one fetch of an instance's status, the part top reads.
type topSample struct {
	control.Header
	At       time.Time // when the client had it: the fallback clock when uptimes do not help
	Pipeline *pipelineStatus
	Shards   []shards.Snapshot
	TCP      *tcpStatus
	NAT      *topNATStatus
}

// topNATStatus is the "nat" section.
type topNATStatus struct {
	Stats    nat.Stats     `json:"stats"`
	Mappings []nat.Mapping `json:"mappings"`
}

// newTopSample decodes the sections top reads from a status.
func newTopSample(st *control.Status, at time.Time) (*topSample, error) {
	s := &topSample{Header: st.Header, At: at}
	var ps pipelineStatus
	if ok, err := st.Section("pipeline", &ps); err != nil {
		return nil, fmt.Errorf("pipeline section: %w", err)
	} else if ok {
		s.Pipeline = &ps
	}
	if _, err := st.Section("shards", &s.Shards); err != nil {
		return nil, fmt.Errorf("shards section: %w", err)
	}
	var tcp tcpStatus
	if ok, err := st.Section("tcp", &tcp); err != nil {
		return nil, fmt.Errorf("tcp section: %w", err)
	} else if ok {
		s.TCP = &tcp
	}
	var ns topNATStatus
	if ok, err := st.Section("nat", &ns); err != nil {
		return nil, fmt.Errorf("nat section: %w", err)
	} else if ok {
		s.NAT = &ns
	}
	return s, nil
}

func fetchTopSample(opt topOptions) (*topSample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), max(2*opt.Interval, 5*time.Second))
	defer cancel()
	st, err := control.Fetch(ctx, opt.Dir, opt.Instance)
	if err != nil {
		return nil, err
	}
	return newTopSample(st, time.Now())
}

// wentAway is the error top ends with when a fetch fails after the first.
func wentAway(name string, err error) error {
	return fmt.Errorf("instance %q went away (its control socket no longer answers): %w", name, err)
}

// topOnce prints one frame for scripts: two fetches an interval apart, no terminal codes.
func topOnce(w io.Writer, opt topOptions) error {
	prev, err := fetchTopSample(opt)
	if err != nil {
		return err
	}
	time.Sleep(opt.Interval)
	cur, err := fetchTopSample(opt)
	if err != nil {
		return wentAway(opt.Instance, err)
	}
	lines := renderTop(prev, cur, topFrame{Width: topWidth})
	_, err = io.WriteString(w, strings.Join(lines, "\n")+"\n")
	return err
}

// topLive redraws a frame every interval until q, Ctrl-C or the instance goes away; it
// restores the terminal however it ends.
func topLive(opt topOptions) error {
	prev, err := fetchTopSample(opt) // the first error is plain: nothing ran yet
	if err != nil {
		return err
	}
	restore := cbreak(int(os.Stdin.Fd()))
	keys := make(chan byte, 8)
	go func() {
		b := make([]byte, 16)
		for {
			n, err := os.Stdin.Read(b)
			for _, c := range b[:n] {
				keys <- c
			}
			if err != nil {
				return // no input (EOF, not a terminal): q is not available, Ctrl-C is
			}
		}
	}()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	out := os.Stdout
	io.WriteString(out, "\x1b[?1049h\x1b[?25l") // the alternate screen, no cursor
	defer func() {
		io.WriteString(out, "\x1b[?25h\x1b[?1049l")
		restore()
	}()
	var last *topSample
	draw := func() {
		fr := topFrame{Width: topWidth, Height: 24, Live: true}
		if ws, err := unix.IoctlGetWinsize(int(out.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 && ws.Row > 0 {
			fr.Width, fr.Height = min(topWidth, int(ws.Col)), int(ws.Row)
		}
		io.WriteString(out, ansiFrame(renderTop(last, prev, fr)))
	}
	draw() // the header, and "waiting" until the first interval has passed
	tick := time.NewTicker(opt.Interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			cur, err := fetchTopSample(opt)
			if err != nil {
				return wentAway(opt.Instance, err)
			}
			last, prev = prev, cur
			draw()
		case c := <-keys:
			if c == 'q' || c == 'Q' || c == 3 {
				return nil
			}
		case s := <-sigs:
			if s == syscall.SIGWINCH {
				draw()
				continue
			}
			return nil
		}
	}
}

// cbreak turns off line buffering and echo on a terminal fd (signals stay on, so Ctrl-C is
// SIGINT), and returns what puts it back; on anything else it does nothing.
func cbreak(fd int) (restore func()) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	t := *old
	t.Lflag &^= unix.ICANON | unix.ECHO
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if unix.IoctlSetTermios(fd, unix.TCSETS, &t) != nil {
		return func() {}
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
}

// ansiFrame draws lines from the top left corner, clearing what each line and the screen
// below them held before.
func ansiFrame(lines []string) string {
	var b strings.Builder
	b.WriteString("\x1b[H")
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString(l)
		b.WriteString("\x1b[K")
	}
	b.WriteString("\x1b[J")
	return b.String()
}

// topFrame is the space a frame has.
type topFrame struct {
	Width  int  // columns; lines are cut to it
	Height int  // rows; 0: no limit (--once)
	Live   bool // say how to quit
}

// maxTopFlows bounds the flows a frame lists when its height does not.
const maxTopFlows = 20

// renderTop renders the frame for the interval from prev to cur (prev nil: the first interval
// has not passed yet, or the instance restarted: no rates).
func renderTop(prev, cur *topSample, fr topFrame) []string {
	var lines []string
	add := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }

	what := cur.Command
	if p := cur.Pipeline; p != nil {
		what = fmt.Sprintf("%s %s on %s", cur.Command, p.Name, strings.Join(p.Interfaces, ","))
	}
	add("netchan top: %s  %s  pid %d  up %s", cur.Instance, what, cur.PID, (time.Duration(cur.Uptime) * time.Second).String())
	if prev != nil && (prev.PID != cur.PID || prev.Uptime > cur.Uptime) {
		prev = nil // another process under the same name: its counters started over
	}
	dt := 0.0
	if prev != nil {
		if dt = cur.Uptime - prev.Uptime; dt <= 0 {
			dt = cur.At.Sub(prev.At).Seconds()
		}
		if dt <= 0 {
			prev = nil
		}
	}
	hint := ""
	if fr.Live {
		hint = "   q or Ctrl-C quits"
	}
	if prev == nil {
		add("%s  waiting for a second sample for rates%s", cur.At.Format("15:04:05"), hint)
	} else {
		add("%s  rates over the last %.2fs%s", cur.At.Format("15:04:05"), dt, hint)
	}
	lines = append(lines, "")

	rate := func(a, b uint64) float64 {
		if b < a {
			return 0
		}
		return float64(b-a) / dt
	}
	prevShard := map[int]*shards.Snapshot{}
	if prev != nil {
		for i := range prev.Shards {
			prevShard[prev.Shards[i].Shard] = &prev.Shards[i]
		}
	}
	const shardFmt = "%5s%3s%4s%10s%9s%10s%9s%8s%8s%7s%6s"
	add(shardFmt, "SHARD", "Q", "CPU", "RX pkt/s", "RX bit/s", "TX pkt/s", "TX bit/s", "DROP/s", "HOUT/s", "HIN/s", "BUSY%")
	var total [7]float64
	var drops []string
	for i := range cur.Shards {
		s := &cur.Shards[i]
		cpu := "-"
		if s.CPU >= 0 {
			cpu = fmt.Sprint(s.CPU)
		}
		p := prevShard[s.Shard]
		if p == nil {
			add(shardFmt, fmt.Sprint(s.Shard), fmt.Sprint(s.Queue), cpu, "-", "-", "-", "-", "-", "-", "-", "-")
			continue
		}
		r := [7]float64{rate(p.RxPackets, s.RxPackets), 8 * rate(p.RxBytes, s.RxBytes), rate(p.TxPackets, s.TxPackets),
			8 * rate(p.TxBytes, s.TxBytes), rate(p.DropsTotal, s.DropsTotal), rate(p.HandoffOut, s.HandoffOut), rate(p.HandoffIn, s.HandoffIn)}
		for j := range r {
			total[j] += r[j]
		}
		busy := "-"
		if db, di := float64(s.BusyNanos)-float64(p.BusyNanos), float64(s.IdleNanos)-float64(p.IdleNanos); db >= 0 && di >= 0 && db+di > 0 {
			busy = fmt.Sprintf("%.1f", 100*db/(db+di))
		}
		add(shardFmt, fmt.Sprint(s.Shard), fmt.Sprint(s.Queue), cpu, fmtCount(r[0]), fmtSI(r[1]), fmtCount(r[2]), fmtSI(r[3]),
			fmtCount(r[4]), fmtCount(r[5]), fmtCount(r[6]), busy)
		if d := shardDropRates(p, s, rate, cur.Pipeline); d != "" {
			drops = append(drops, fmt.Sprintf("drops/s, shard %d: %s", s.Shard, d))
		}
	}
	if prev != nil && len(cur.Shards) > 1 {
		add(shardFmt, "all", "", "", fmtCount(total[0]), fmtSI(total[1]), fmtCount(total[2]), fmtSI(total[3]),
			fmtCount(total[4]), fmtCount(total[5]), fmtCount(total[6]), "")
	}
	if prev != nil {
		if len(drops) == 0 {
			drops = []string{"drops/s: none"}
		}
		lines = append(lines, drops...)
	}

	if st := stageRates(prev, cur, dt); len(st) > 0 {
		lines = append(lines, "")
		lines = append(lines, st...)
	}

	flowRows := maxTopFlows
	if fr.Height > 0 {
		flowRows = max(0, fr.Height-len(lines)-4)
	}
	lines = append(lines, "")
	switch {
	case cur.TCP != nil || cur.NAT != nil:
		if cur.TCP != nil {
			lines = append(lines, tcpFlows(cur.TCP, flowRows)...)
			flowRows = max(0, flowRows-len(cur.TCP.Conns)-1)
		}
		if cur.NAT != nil {
			var pn *topNATStatus
			if prev != nil {
				pn = prev.NAT
			}
			lines = append(lines, natFlows(pn, cur.NAT, rate, flowRows)...)
		}
	default:
		add("flows: this instance publishes none (the stack's TCP connections and the NAT's")
		add("mappings show here)")
	}

	for i, l := range lines {
		l = strings.TrimRight(l, " ")
		lines[i] = l
		if r := []rune(l); fr.Width > 0 && len(r) > fr.Width {
			lines[i] = string(r[:fr.Width])
		}
	}
	if fr.Height > 0 && len(lines) > fr.Height {
		lines = lines[:fr.Height]
	}
	return lines
}

// shardDropRates lists a shard's drops/s by reason in the interval, largest first, with the
// kernel's per-socket drops.
func shardDropRates(p, s *shards.Snapshot, rate func(a, b uint64) float64, ps *pipelineStatus) string {
	type rr struct {
		name string
		r    float64
	}
	var rs []rr
	for name, n := range s.Drops {
		if r := rate(p.Drops[name], n); r > 0 {
			rs = append(rs, rr{name, r})
		}
	}
	for i, k := range s.Kernel {
		if i >= len(p.Kernel) {
			break
		}
		pk := p.Kernel[i]
		link := ""
		if ps != nil && len(s.Kernel) > 1 && i < len(ps.Interfaces) {
			link = " " + ps.Interfaces[i]
		}
		for _, c := range []struct {
			name string
			a, b uint64
		}{{"rx_dropped", pk.RxDropped, k.RxDropped}, {"rx_ring_full", pk.RxRingFull, k.RxRingFull},
			{"fill_ring_empty", pk.FillRingEmpty, k.FillRingEmpty}, {"rx_invalid", pk.RxInvalid, k.RxInvalid}, {"tx_invalid", pk.TxInvalid, k.TxInvalid}} {
			if r := rate(c.a, c.b); r > 0 {
				rs = append(rs, rr{"kernel" + link + " " + c.name, r})
			}
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].r > rs[j].r || rs[i].r == rs[j].r && rs[i].name < rs[j].name })
	var out []string
	for _, r := range rs {
		out = append(out, r.name+" "+fmtCount(r.r))
	}
	return strings.Join(out, ", ")
}

// stageRates renders the stages' runtime summed over the shards, in pipeline order.
func stageRates(prev, cur *topSample, dt float64) []string {
	type agg struct {
		name                              string
		calls, pkts, drops, nsSum, nsPkts float64
		pCalls, pPkts, pDrops             float64
		have                              bool
	}
	var order []string
	by := map[string]*agg{}
	get := func(name string) *agg {
		a := by[name]
		if a == nil {
			a = &agg{name: name}
			by[name] = a
			order = append(order, name)
		}
		return a
	}
	sum := func(m map[string]uint64) (t float64) {
		for _, n := range m {
			t += float64(n)
		}
		return t
	}
	for _, s := range cur.Shards {
		for _, st := range s.Stages {
			a := get(st.Name)
			a.calls += float64(st.Calls)
			a.pkts += float64(st.Packets)
			a.drops += sum(st.Drops)
			a.nsSum += st.NanosPerPacket * float64(st.Packets)
			a.nsPkts += float64(st.Packets)
		}
	}
	if len(order) == 0 {
		return nil
	}
	if prev != nil {
		for _, s := range prev.Shards {
			for _, st := range s.Stages {
				if a := by[st.Name]; a != nil {
					a.pCalls += float64(st.Calls)
					a.pPkts += float64(st.Packets)
					a.pDrops += sum(st.Drops)
					a.have = true
				}
			}
		}
	}
	const stageFmt = "%-24s%11s%11s%11s%9s%10s"
	out := []string{fmt.Sprintf(stageFmt, "STAGE (all shards)", "calls/s", "pkts/s", "pkts/call", "ns/pkt", "drops/s")}
	for _, name := range order {
		a := by[name]
		ns := "-"
		if a.nsPkts > 0 && a.nsSum > 0 {
			ns = fmt.Sprintf("%.1f", a.nsSum/a.nsPkts)
		}
		if !a.have || dt <= 0 {
			out = append(out, fmt.Sprintf(stageFmt, name, "-", "-", "-", ns, "-"))
			continue
		}
		d := func(b, a float64) float64 { return max(0, b-a) / dt }
		ppc := "-"
		if c := a.calls - a.pCalls; c > 0 {
			ppc = fmt.Sprintf("%.2f", (a.pkts-a.pPkts)/c)
		}
		out = append(out, fmt.Sprintf(stageFmt, name, fmtCount(d(a.calls, a.pCalls)), fmtCount(d(a.pkts, a.pPkts)), ppc, ns, fmtCount(d(a.drops, a.pDrops))))
	}
	return out
}

// tcpFlows lists the stack's connections, those whose window allows the most first.
func tcpFlows(tcp *tcpStatus, rows int) []string {
	conns := slices.Clone(tcp.Conns)
	pace := func(c stack.ConnStats) float64 {
		if c.SRTT <= 0 {
			return 0
		}
		return float64(c.Cwnd) / c.SRTT.Seconds()
	}
	slices.SortStableFunc(conns, func(a, b stack.ConnStats) int { return cmp.Compare(pace(b), pace(a)) })
	out := []string{fmt.Sprintf("TCP connections: %d (by cwnd/srtt)", len(tcp.Conns)+tcp.Omitted)}
	if len(conns) == 0 || rows <= 1 {
		return out
	}
	const connFmt = "%2s %-21s %-21s %-11s%8s%8s%6s"
	out = append(out, fmt.Sprintf(connFmt, "SH", "LOCAL", "REMOTE", "STATE", "SRTT ms", "CWND", "RETX"))
	for i, c := range conns {
		if i >= rows-1 {
			out = append(out, fmt.Sprintf("(%d more)", len(conns)-i+tcp.Omitted))
			break
		}
		out = append(out, fmt.Sprintf(connFmt, fmt.Sprint(c.Shard), c.Local, c.Remote, c.State,
			fmt.Sprintf("%.2f", float64(c.SRTT)/1e6), fmtCount(float64(c.Cwnd)), fmtCount(float64(c.Retransmits))))
	}
	return out
}

// natFlows lists the NAT's rates and mappings, those created in the interval first.
func natFlows(prev, cur *topNATStatus, rate func(a, b uint64) float64, rows int) []string {
	st := cur.Stats
	var out []string
	if prev != nil {
		p := prev.Stats
		i := func(a, b int64) float64 { return rate(uint64(max(a, 0)), uint64(max(b, 0))) }
		out = append(out, fmt.Sprintf("NAT: %d mappings, created/s %s, expired/s %s, translated pkts/s %s, fast path %s",
			st.Active, fmtCount(i(p.Created, st.Created)), fmtCount(i(p.Expired, st.Expired)),
			fmtCount(rate(p.Translated, st.Translated)), fmtCount(rate(p.FastTranslated, st.FastTranslated))))
	} else {
		out = append(out, fmt.Sprintf("NAT: %d mappings", st.Active))
	}
	if len(cur.Mappings) == 0 || rows <= 1 {
		return out
	}
	type key struct {
		shard          int
		proto, in, ext string
	}
	old := map[key]bool{}
	if prev != nil {
		for _, m := range prev.Mappings {
			old[key{m.Shard, m.Proto, m.Inside, m.External}] = true
		}
	}
	ms := slices.Clone(cur.Mappings)
	isNew := func(m nat.Mapping) bool { return prev != nil && !old[key{m.Shard, m.Proto, m.Inside, m.External}] }
	slices.SortStableFunc(ms, func(a, b nat.Mapping) int {
		if isNew(a) == isNew(b) {
			return 0
		}
		if isNew(a) {
			return -1
		}
		return 1
	})
	const mapFmt = "%2s %-5s %-22s %-22s %s"
	out = append(out, fmt.Sprintf(mapFmt, "SH", "PROTO", "INSIDE", "EXTERNAL", ""))
	for i, m := range ms {
		if i >= rows-1 {
			out = append(out, fmt.Sprintf("(%d more)", len(ms)-i))
			break
		}
		mark := ""
		if isNew(m) {
			mark = "new"
		}
		out = append(out, fmt.Sprintf(mapFmt, fmt.Sprint(m.Shard), m.Proto, m.Inside, m.External, mark))
	}
	return out
}

// fmtCount prints a rate or count: an integer below a million, then with an SI prefix.
func fmtCount(v float64) string {
	if v < 1e6 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmtSI(v)
}

// fmtSI prints v with three significant digits and an SI prefix (9.61M, 120k, 0).
func fmtSI(v float64) string {
	units := []string{"", "k", "M", "G", "T"}
	u := 0
	for v >= 999.5 && u < len(units)-1 {
		v /= 1000
		u++
	}
	switch {
	case v == 0:
		return "0"
	case u == 0:
		return fmt.Sprintf("%.0f", v)
	case v < 9.995:
		return fmt.Sprintf("%.2f%s", v, units[u])
	case v < 99.95:
		return fmt.Sprintf("%.1f%s", v, units[u])
	}
	return fmt.Sprintf("%.0f%s", v, units[u])
}
