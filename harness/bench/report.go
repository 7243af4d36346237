package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

// Ratio compares voik with a reference at one size. For rates it is
// voik/reference (above 1: voik is faster); for latencies it is
// reference/voik, so that above 1 again means voik is better.
type Ratio struct {
	Size    int     `json:"size"`
	Name    string  `json:"name"`
	Value   float64 `json:"value"`
	Measure string  `json:"measure"` // "msg/s" or "p50 latency"
	// Ref is the reference's scenario when the name does not say which
	// it is: the fastest JetStream reader of the run.
	Ref string `json:"ref,omitempty"`
}

// Target is one goal of the issue, checked at 1 KiB.
type Target struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Unit string  `json:"unit"`
	Met  bool    `json:"met"`
	Note string  `json:"note,omitempty"`
}

// Info is a figure printed with the targets that states no goal: it is
// neither met nor missed.
type Info struct {
	Name string  `json:"name"`
	Got  float64 `json:"got"`
	Unit string  `json:"unit"`
	Note string  `json:"note,omitempty"`
}

func (r *Report) figure(size int, scenario string) *Figure {
	for i := range r.Figures {
		if r.Figures[i].Size == size && r.Figures[i].Scenario == scenario {
			return &r.Figures[i]
		}
	}
	return nil
}

func (r *Report) sizes() []int {
	var sizes []int
	for _, f := range r.Figures {
		if len(sizes) == 0 || sizes[len(sizes)-1] != f.Size {
			sizes = append(sizes, f.Size)
		}
	}
	return sizes
}

// rate is a's msg/s over b's, 0 when either is missing.
func (r *Report) rate(size int, a, b string) float64 {
	fa, fb := r.figure(size, a), r.figure(size, b)
	if fa == nil || fb == nil || fb.MsgPerS == 0 || fa.Err != "" || fb.Err != "" {
		return 0
	}
	return fa.MsgPerS / fb.MsgPerS
}

// repeatRatios is the rate of scenario a over that of the reference
// within each repeat that measured both: the two one after the other,
// unlike the ratio of the best of each, which a lucky repeat of either
// moves. Given several references, each repeat's fastest of them (that
// did not fail) is the reference.
func (r *Report) repeatRatios(size int, a string, refs ...string) []string {
	var out []string
	for repeat := 1; ; repeat++ {
		var fa, fb *Figure
		seen := false
		for i := range r.Runs {
			f := &r.Runs[i]
			if f.Size != size || f.Repeat != repeat {
				continue
			}
			seen = true
			switch {
			case f.Scenario == a:
				fa = f
			case slices.Contains(refs, f.Scenario) && f.Err == "" && (fb == nil || f.MsgPerS > fb.MsgPerS):
				fb = f
			}
		}
		if !seen {
			return out
		}
		if fa != nil && fb != nil && fb.MsgPerS > 0 && fa.Err == "" {
			out = append(out, fmt.Sprintf("%.2f", fa.MsgPerS/fb.MsgPerS))
		}
	}
}

// fastestJSReader is the JetStream reader of the history (jsReaders) with
// the best rate at size, of those that read it all without an error; nil
// if none did. failed names each reader that ran and is not counted, with
// its error, so that a target never quietly drops a faster reader that
// broke.
func (r *Report) fastestJSReader(size int) (fastest *Figure, failed []string) {
	for _, scenario := range jsReaders {
		f := r.figure(size, scenario)
		switch {
		case f == nil:
		case f.Err != "" || f.Done != f.Messages || f.MsgPerS <= 0:
			why := f.Err
			if why == "" {
				why = fmt.Sprintf("%d of %d read", f.Done, f.Messages)
			}
			failed = append(failed, fmt.Sprintf("%s (%s)", scenario, why))
		case fastest == nil || f.MsgPerS > fastest.MsgPerS:
			fastest = f
		}
	}
	return fastest, failed
}

// best reduces Runs to Figures: per size and scenario, the repeat with the
// best rate (its latencies with it), and the worst loss and first error of
// any repeat, so that a lucky run hides no loss.
func (r *Report) best() {
	r.Figures = nil
	for _, f := range r.Runs {
		b := r.figure(f.Size, f.Scenario)
		if b == nil {
			r.Figures = append(r.Figures, f)
			continue
		}
		lost, errText := max(b.Lost, f.Lost), b.Err
		if errText == "" {
			errText = f.Err
		}
		if f.MsgPerS > b.MsgPerS {
			*b = f
		}
		b.Lost, b.Err = lost, errText
	}
}

// compare fills Figures, Ratios, Targets and Info from Runs (and Floods).
func (r *Report) compare() {
	r.best()
	r.Ratios, r.Targets, r.Info = nil, nil, nil
	for _, size := range r.sizes() {
		for _, c := range []struct{ name, voik, ref string }{
			{"capture voik/ceiling", ScenarioVoikCapture, ScenarioCeiling},
			{"capture voik/JetStream", ScenarioVoikCapture, ScenarioJSCapture},
			{"acked voik/ack responder", ScenarioVoikAck, ScenarioCeilingAck},
			{"acked ack responder/JetStream default", ScenarioCeilingAck, ScenarioJSAck},
			{"acked voik/JetStream default", ScenarioVoikAck, ScenarioJSAck},
			{"acked voik/JetStream sync always", ScenarioVoikAck, ScenarioJSAckAlways},
			{"acked, wide: voik/ack responder", ScenarioVoikAckWide, ScenarioCeilingAckWide},
			{"acked, wide: voik/JetStream default", ScenarioVoikAckWide, ScenarioJSAckWide},
			{"acked, wide: voik/JetStream sync always", ScenarioVoikAckWide, ScenarioJSAckAlwaysWide},
			{"history voik FETCH/FETCH from memory", ScenarioVoikFetch, ScenarioCeilingFetch},
		} {
			if v := r.rate(size, c.voik, c.ref); v > 0 {
				r.Ratios = append(r.Ratios, Ratio{Size: size, Name: c.name, Value: v, Measure: "msg/s"})
			}
		}
		// Reads of the history against each JetStream reader, then against
		// the fastest of them, which is what the claims are stated against.
		for _, reader := range jsReaders {
			if v := r.rate(size, ScenarioVoikFetch, reader); v > 0 {
				r.Ratios = append(r.Ratios, Ratio{Size: size, Name: "history voik FETCH/" + reader, Value: v, Measure: "msg/s"})
			}
		}
		if fastest, _ := r.fastestJSReader(size); fastest != nil {
			for _, c := range []struct{ name, scenario string }{
				{"history voik FETCH/fastest JetStream reader", ScenarioVoikFetch},
				{"history FETCH from memory/fastest JetStream reader", ScenarioCeilingFetch},
				{"history voik REPLAY/fastest JetStream reader", ScenarioVoikReplay},
			} {
				if v := r.rate(size, c.scenario, fastest.Scenario); v > 0 {
					r.Ratios = append(r.Ratios, Ratio{Size: size, Name: c.name, Value: v, Measure: "msg/s", Ref: fastest.Scenario})
				}
			}
		}
		for _, c := range []struct{ name, voik, ref string }{
			{"history voik REPLAY/JetStream ordered", ScenarioVoikReplay, ScenarioJSOrdered},
			{"capture under read flood/without", ScenarioVoikFloodCapture, ScenarioVoikFloodQuiet},
		} {
			if v := r.rate(size, c.voik, c.ref); v > 0 {
				r.Ratios = append(r.Ratios, Ratio{Size: size, Name: c.name, Value: v, Measure: "msg/s"})
			}
		}
		r.groupRatios(size)
		one := r.figure(size, ScenarioVoikFetchOne)
		for _, c := range []struct{ name, ref string }{
			{"1-record read FETCH from memory/voik FETCH", ScenarioCeilingFetchOne},
			{"1-record read JetStream get/voik FETCH", ScenarioJSGetOne},
		} {
			if ref := r.figure(size, c.ref); one != nil && ref != nil && one.P50us > 0 && ref.P50us > 0 {
				r.Ratios = append(r.Ratios, Ratio{Size: size, Name: c.name, Value: ref.P50us / one.P50us, Measure: "p50 latency"})
			}
		}
	}
	r.checkTargets(1024)
	r.checkFloodTargets(1024)
	r.checkGroupTargets(1024)
}

func (r *Report) checkTargets(size int) {
	ratio := func(name, voik, ref string, want float64) {
		if r.figure(size, ref) == nil {
			return // not run
		}
		got := r.rate(size, voik, ref)
		t := Target{Name: name, Want: fmt.Sprintf(">= %.1f", want), Got: got, Unit: "x", Met: got >= want}
		if pairs := r.repeatRatios(size, voik, ref); len(pairs) > 1 {
			t.Note = "repeat by repeat: " + strings.Join(pairs, ", ")
		}
		r.Targets = append(r.Targets, t)
	}
	ratio("capture vs ceiling", ScenarioVoikCapture, ScenarioCeiling, 0.9)
	capture := r.figure(size, ScenarioVoikCapture)
	if capture == nil {
		return
	}
	t := Target{Name: "capture burst lost", Want: "0 of >= 300000", Got: float64(capture.Lost), Unit: "messages",
		Met: capture.Lost == 0 && capture.Err == "" && capture.Messages >= 300_000}
	if capture.Messages < 300_000 {
		t.Note = fmt.Sprintf("burst was only %d", capture.Messages)
	}
	r.Targets = append(r.Targets, t)
	// Acked appends at both windows: at the narrow one a round trip that
	// waits for fdatasync sets the pace, at the wide one (nats.go's
	// default for JetStream) how much each sync carries.
	for _, w := range []struct {
		window           int
		voik, js, always string
	}{
		{r.Window, ScenarioVoikAck, ScenarioJSAck, ScenarioJSAckAlways},
		{r.WideWindow, ScenarioVoikAckWide, ScenarioJSAckWide, ScenarioJSAckAlwaysWide},
	} {
		if r.figure(size, w.voik) == nil {
			continue
		}
		ratio(fmt.Sprintf("acked appends vs JetStream default, window %d", w.window), w.voik, w.js, 1)
		ratio(fmt.Sprintf("acked appends vs JetStream sync always, window %d", w.window), w.voik, w.always, 20)
	}
	// Reads faster than JetStream's, whichever reader a user picks. The
	// old target, 3x the jetstream package's pull consumer, was against a
	// reader two to three times slower than JetStream's fastest; against
	// that one, even a responder that stores nothing and serves pages from
	// memory reached only about 2x on the 2-core machine: NATS bounds it.
	r.fetchTarget(size, 1)
	// Reads and appends after the burst add data; the heap must not follow
	// it. The burst itself may grow it (NATS buffers what voik has not
	// appended yet), so growth is counted from after capture; the worst
	// repeat is reported.
	var worst *Resources
	for i, res := range r.Resources {
		if res.Size == size && (worst == nil || res.AnonRSSAfterReads-res.AnonRSSAfterCapture > worst.AnonRSSAfterReads-worst.AnonRSSAfterCapture) {
			worst = &r.Resources[i]
		}
	}
	if worst != nil {
		growth := worst.AnonRSSAfterReads - worst.AnonRSSAfterCapture
		r.Targets = append(r.Targets, Target{
			Name: "anon RSS growth after capture", Want: "< 32 MiB", Got: float64(growth) / (1 << 20), Unit: "MiB",
			Met:  growth < 32<<20,
			Note: fmt.Sprintf("worst run: %s stored; anon RSS %s at start, %s after capture, %s at end; peak RSS %s", mib(worst.StoredBytes), mib(worst.AnonRSSStart), mib(worst.AnonRSSAfterCapture), mib(worst.AnonRSSAfterReads), mib(worst.PeakRSS)),
		})
	}
}

// fetchTarget states voik's FETCH of the whole history against the
// fastest JetStream reader of the run (see jsReaders), which its note
// names: a claim against a reader a user would not pick would say
// nothing. Each repeat's ratio is against that repeat's fastest reader.
func (r *Report) fetchTarget(size int, want float64) {
	fastest, failed := r.fastestJSReader(size)
	if fastest == nil && len(failed) == 0 {
		return // JetStream not run
	}
	t := Target{Name: "FETCH history vs fastest JetStream reader", Want: fmt.Sprintf(">= %.1f", want), Unit: "x"}
	var notes []string
	if fastest == nil {
		notes = append(notes, "no JetStream reader read the whole history")
	} else {
		t.Got = r.rate(size, ScenarioVoikFetch, fastest.Scenario)
		t.Met = t.Got >= want
		notes = append(notes, fmt.Sprintf("fastest: %s, %.0f msg/s", fastest.Scenario, fastest.MsgPerS))
		if voik := r.figure(size, ScenarioVoikFetch); voik != nil && voik.Err != "" {
			notes = append(notes, "voik FETCH failed: "+voik.Err)
		}
	}
	if pairs := r.repeatRatios(size, ScenarioVoikFetch, jsReaders...); len(pairs) > 1 {
		notes = append(notes, "repeat by repeat: "+strings.Join(pairs, ", "))
	}
	if len(failed) > 0 {
		notes = append(notes, "not counted: "+strings.Join(failed, ", "))
	}
	t.Note = strings.Join(notes, "; ")
	r.Targets = append(r.Targets, t)
}

// checkFloodTargets states the read-flood part's targets: not a message
// lost, and voik's anonymous memory within its reply budget plus a
// margin, whatever the flood asks for. The capture rate under the flood
// is information, not a target: the flood's client shares the machine's
// cores with voik and the publisher, so a slower capture is to be
// expected; only the loss of a message is a failure.
func (r *Report) checkFloodTargets(size int) {
	under, quiet := r.figure(size, ScenarioVoikFloodCapture), r.figure(size, ScenarioVoikFloodQuiet)
	if under == nil || quiet == nil {
		return // not run
	}
	t := Target{Name: "loss under read flood", Want: "0", Got: float64(under.Lost), Unit: "messages",
		Met:  under.Lost == 0 && under.Err == "",
		Note: fmt.Sprintf("worst run, burst of %d; without the flood: %d lost", under.Messages, quiet.Lost)}
	if under.Err != "" {
		t.Note += "; " + under.Err
	}
	r.Targets = append(r.Targets, t)
	var worst *FloodRun
	for i, run := range r.Floods {
		if run.Size == size && run.FloodPeakAnonRSS > 0 && (worst == nil || run.FloodPeakAnonRSS > worst.FloodPeakAnonRSS) {
			worst = &r.Floods[i]
		}
	}
	if worst != nil { // 0: voik ran in this process, its memory unmeasured
		limit := worst.ReplyBudget + floodMemoryMargin
		r.Targets = append(r.Targets, Target{
			Name: "peak anon RSS under read flood", Want: fmt.Sprintf("< %s (reply budget %s + %s)", mib(limit), mib(worst.ReplyBudget), mib(floodMemoryMargin)),
			Got: float64(worst.FloodPeakAnonRSS) / (1 << 20), Unit: "MiB", Met: worst.FloodPeakAnonRSS < limit,
			Note: fmt.Sprintf("worst run; without the flood %s; the flood sent %d, had %d replies, %d of them 503", mib(worst.NoFloodPeakAnonRSS), worst.Sent, worst.Replies, worst.Overloaded),
		})
	}
	info := Info{Name: "capture under read flood / without", Got: r.rate(size, ScenarioVoikFloodCapture, ScenarioVoikFloodQuiet), Unit: "x",
		Note: fmt.Sprintf("best of each: %.0f msg/s under the flood, %.0f without", under.MsgPerS, quiet.MsgPerS)}
	if pairs := r.repeatRatios(size, ScenarioVoikFloodCapture, ScenarioVoikFloodQuiet); len(pairs) > 1 {
		info.Note += "; repeat by repeat: " + strings.Join(pairs, ", ")
	}
	r.Info = append(r.Info, info)
}

// Write prints the report as tables.
func (r *Report) Write(w io.Writer) {
	r.writeHeader(w)
	for _, size := range r.sizes() {
		r.writeFigures(w, size)
		r.writeRatios(w, size)
	}
	r.writeResources(w)
	r.writeFloods(w)
	r.writeTargets(w)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR %s\n", e)
	}
}

// writeHeader prints what ran, where and when, and how to read the
// figures that follow.
func (r *Report) writeHeader(w io.Writer) {
	fmt.Fprintf(w, "voik benchmark, %s run, %s, %.0fs, started %s; best of %d per scenario (lost: worst of them)\n", r.Mode, r.Host, r.Seconds, r.Started.Format("2006-01-02 15:04:05"), r.Repeat)
	fmt.Fprintf(w, "voik: child process (unless -inprocess), VOIK_SYNC as in each note; JetStream: file storage in this process; window %d (wide: %d); MB = 10^6 data bytes\n", r.Window, r.WideWindow)
}

// writeFigures prints the table of one size's figures, in scenarioOrder
// and then the group part's order.
func (r *Report) writeFigures(w io.Writer, size int) {
	fmt.Fprintf(w, "\n%s messages\n", sizeName(size))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tmessages\tdone\tlost\tmsg/s\tMB/s\tp50\tp99\tCPU µs/msg\t\tnote\t")
	for _, scenario := range slices.Concat(scenarioOrder, groupScenarioOrder) {
		if f := r.figure(size, scenario); f != nil {
			writeFigureRow(tw, f)
		}
	}
	tw.Flush()
}

// writeFigureRow prints one figure, leaving latencies and CPU blank where
// they were not measured (a 0 would read as a measurement) and showing an
// error in place of the note.
func writeFigureRow(tw io.Writer, f *Figure) {
	p50, p99 := "", ""
	if f.P50us > 0 {
		p50, p99 = micros(f.P50us), micros(f.P99us)
	}
	note := f.Note
	if f.Err != "" {
		note = "ERROR: " + f.Err
	}
	cpu := ""
	if f.CPUus > 0 {
		cpu = fmt.Sprintf("%.2f", f.CPUus)
	}
	fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%.1f\t%s\t%s\t%s\t\t%s\t\n", f.Scenario, f.Messages, f.Done, f.Lost, f.MsgPerS, f.MBPerS, p50, p99, cpu, note)
}

// writeRatios prints one size's ratios on a line, if it has any, naming
// the reference of those whose name does not.
func (r *Report) writeRatios(w io.Writer, size int) {
	var parts []string
	for _, ratio := range r.Ratios {
		if ratio.Size == size {
			name := ratio.Name
			if ratio.Ref != "" {
				name += " (" + ratio.Ref + ")"
			}
			parts = append(parts, fmt.Sprintf("%s %.2f", name, ratio.Value))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "ratios: %s\n", strings.Join(parts, "; "))
	}
}

// writeResources prints the table of voik's resources, one row per size
// and repeat; none when voik ran in this process.
func (r *Report) writeResources(w io.Writer) {
	if len(r.Resources) == 0 {
		return
	}
	fmt.Fprintln(w, "\nvoik process resources (from /proc)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "size\trun\tstored\tpeak RSS\tanon start\tanon capture\tanon appends\tanon end\tRSS end\tCPU s/M: capture\tappends\tfetch\treplay\tcapture: sys\tfaults/1k\tappends: faults/1k\t")
	for _, res := range r.Resources {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f%%\t%.0f\t%.0f\t\n", sizeName(res.Size), res.Run, mib(res.StoredBytes), mib(res.PeakRSS),
			mib(res.AnonRSSStart), mib(res.AnonRSSAfterCapture), mib(res.AnonRSSAfterAppends), mib(res.AnonRSSAfterReads), mib(res.RSSAfterReads),
			res.CPUPerMillionCapture, res.CPUPerMillionAppends, res.CPUPerMillionFetch, res.CPUPerMillionReplay,
			100*res.CaptureSystemShare, res.CaptureFaultsPerK, res.AppendsFaultsPerK)
	}
	tw.Flush()
}

// writeFloods prints the table of the read-flood part, one row per size
// and repeat, if it ran.
func (r *Report) writeFloods(w io.Writer) {
	if len(r.Floods) == 0 {
		return
	}
	fmt.Fprintf(w, "\ncapture under read flood: one voik captures the burst with nothing reading, then again while another connection sends %d FETCH/s, each for a full page of history (503s are voik refusing past its reply budget); anon RSS is voik's peak in each phase\n", floodRate)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	// The flood's own rate is shown: its client shares the cores and
	// sends less than asked when it falls behind (a ticker drops ticks).
	fmt.Fprintln(tw, "size\trun\tburst\tno flood: msg/s\tlost\tpeak anon\tflood: msg/s\tlost\tpeak anon\twith/without\tflood s\tFETCH sent\t/s\treplies\t503s\treply MiB\treply budget\t")
	for _, run := range r.Floods {
		writeFloodRow(tw, run)
	}
	tw.Flush()
}

// writeFloodRow prints one repeat of the read-flood part.
func writeFloodRow(tw io.Writer, run FloodRun) {
	anonQuiet, anonFlood := "-", "-" // voik in this process: not measured
	if run.FloodPeakAnonRSS > 0 {
		anonQuiet, anonFlood = mib(run.NoFloodPeakAnonRSS), mib(run.FloodPeakAnonRSS)
	}
	perSecond := 0.0
	if run.FloodSeconds > 0 {
		perSecond = float64(run.Sent) / run.FloodSeconds
	}
	fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%d\t%s\t%.0f\t%d\t%s\t%.2f\t%.1f\t%d\t%.0f\t%d\t%d\t%.0f\t%s\t\n", sizeName(run.Size), run.Run, run.Messages,
		run.NoFloodMsgPerS, run.NoFloodLost, anonQuiet, run.FloodMsgPerS, run.FloodLost, anonFlood, run.Ratio,
		run.FloodSeconds, run.Sent, perSecond, run.Replies, run.Overloaded, float64(run.ReplyBytes)/(1<<20), mib(run.ReplyBudget))
}

// writeTargets prints the targets, met or missed, then the figures stated
// for information only, if there are any.
func (r *Report) writeTargets(w io.Writer) {
	if len(r.Targets)+len(r.Info) == 0 {
		return
	}
	fmt.Fprintln(w, "\ntargets at 1KiB")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		status := "MISSED"
		if t.Met {
			status = "met"
		}
		fmt.Fprintf(tw, "  %s\t%s\twant %s\tgot %.2f %s\t%s\n", status, t.Name, t.Want, t.Got, t.Unit, t.Note)
	}
	for _, t := range r.Info {
		fmt.Fprintf(tw, "  info\t%s\tno target\tgot %.2f %s\t%s\n", t.Name, t.Got, t.Unit, t.Note)
	}
	tw.Flush()
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
