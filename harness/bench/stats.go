package bench

import (
	"slices"
	"time"
)

// Figure is one measured line of the report.
type Figure struct {
	Size     int     `json:"size"`     // message data bytes
	Scenario string  `json:"scenario"` // see the Scenario* constants
	Messages int     `json:"messages"` // attempted
	Done     int     `json:"done"`     // delivered, stored, acked or read
	Lost     int     `json:"lost"`     // attempted but never done
	Seconds  float64 `json:"seconds"`
	MsgPerS  float64 `json:"msg_per_s"`
	MBPerS   float64 `json:"mb_per_s"` // data bytes, 10^6
	P50us    float64 `json:"p50_us,omitempty"`
	P99us    float64 `json:"p99_us,omitempty"`
	// CPUus is the CPU time of the process that stored or served the
	// messages (voik, or the reference child), in microseconds per
	// message done; 0 when not measured (JetStream shares the benchmark's
	// process, voik -inprocess too).
	CPUus  float64 `json:"cpu_us_per_msg,omitempty"`
	Note   string  `json:"note,omitempty"`
	Repeat int     `json:"repeat"` // which repeat of the run measured it, from 1
	Err    string  `json:"error,omitempty"`
}

// Scenarios, in the order the report prints them.
const (
	ScenarioCeiling          = "ceiling: core subscriber"
	ScenarioCeilingInProcess = "ceiling: in-process sub"
	ScenarioCeilingAck       = "ceiling: ack responder"
	ScenarioCeilingAckWide   = "ceiling: ack responder, wide"
	ScenarioCeilingFetch     = "ceiling: FETCH from memory"
	ScenarioCeilingFetchOne  = "ceiling: FETCH 1 from mem"
	ScenarioVoikCapture      = "voik capture"
	ScenarioJSCapture        = "JetStream capture"
	ScenarioVoikAck          = "voik acked append"
	ScenarioJSAck            = "JetStream acked publish"
	ScenarioJSAckAlways      = "JetStream acked, sync always"
	ScenarioVoikAckWide      = "voik acked append, wide"
	ScenarioJSAckWide        = "JetStream acked publish, wide"
	ScenarioJSAckAlwaysWide  = "JetStream sync always, wide"
	ScenarioVoikFetch        = "voik FETCH history"
	ScenarioJSPull           = "JetStream pull consumer"
	ScenarioJSOrdered        = "JetStream ordered consumer"
	ScenarioJSLegacyPull     = "JetStream legacy pull fetch"
	ScenarioJSLegacyOrdered  = "JetStream legacy push ordered"
	ScenarioVoikFetchOne     = "voik FETCH 1 record"
	ScenarioJSGetOne         = "JetStream get 1 message"
	ScenarioVoikReplay       = "voik REPLAY"
	ScenarioVoikFloodQuiet   = "voik capture, no read flood"
	ScenarioVoikFloodCapture = "voik capture under read flood"
)

// jsReaders are the JetStream readers of the whole history, each a way a
// user of nats.go could pick: the jetstream package's pull and ordered
// consumers, and the older nats.JetStreamContext's pull subscription and
// ordered push consumer. Claims about voik's reads are stated against the
// fastest of them in the run.
var jsReaders = []string{ScenarioJSPull, ScenarioJSOrdered, ScenarioJSLegacyPull, ScenarioJSLegacyOrdered}

var scenarioOrder = []string{
	ScenarioCeiling, ScenarioCeilingInProcess, ScenarioVoikCapture, ScenarioJSCapture,
	ScenarioCeilingAck, ScenarioVoikAck, ScenarioJSAck, ScenarioJSAckAlways,
	ScenarioCeilingAckWide, ScenarioVoikAckWide, ScenarioJSAckWide, ScenarioJSAckAlwaysWide,
	ScenarioCeilingFetch, ScenarioVoikFetch, ScenarioJSPull, ScenarioJSOrdered,
	ScenarioJSLegacyPull, ScenarioJSLegacyOrdered,
	ScenarioCeilingFetchOne, ScenarioVoikFetchOne, ScenarioJSGetOne, ScenarioVoikReplay,
	ScenarioVoikFloodQuiet, ScenarioVoikFloodCapture,
}

// throughput fills the rates of f from Done, size and elapsed.
func (f *Figure) throughput(elapsed time.Duration) {
	f.Seconds = elapsed.Seconds()
	if f.Seconds > 0 {
		f.MsgPerS = float64(f.Done) / f.Seconds
		f.MBPerS = float64(f.Done) * float64(f.Size) / f.Seconds / 1e6
	}
	f.Lost = f.Messages - f.Done
}

// latencies fills P50us and P99us.
func (f *Figure) latencies(d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	f.P50us = float64(percentile(d, 0.50)) / 1e3
	f.P99us = float64(percentile(d, 0.99)) / 1e3
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Resources is what voik's process used for one message size.
type Resources struct {
	Size int `json:"size"`
	Run  int `json:"run"` // which repeat
	// Data bytes voik held at the end (capture history + acked appends).
	StoredBytes int64 `json:"stored_bytes"`
	// Resident set: peak over the run, and now, and anonymous (heap,
	// stacks: what does not come back from the page cache) at each step.
	PeakRSS              int64   `json:"peak_rss"`
	AnonRSSStart         int64   `json:"anon_rss_start"`
	AnonRSSAfterCapture  int64   `json:"anon_rss_after_capture"`
	AnonRSSAfterAppends  int64   `json:"anon_rss_after_appends"`
	AnonRSSAfterReads    int64   `json:"anon_rss_after_reads"`
	RSSAfterReads        int64   `json:"rss_after_reads"`
	CPUPerMillionCapture float64 `json:"cpu_s_per_million_capture"`
	CPUPerMillionAppends float64 `json:"cpu_s_per_million_appends"`
	CPUPerMillionFetch   float64 `json:"cpu_s_per_million_fetch"`
	CPUPerMillionReplay  float64 `json:"cpu_s_per_million_replay"`
	// Capture's cost in detail: system share of its CPU, page faults and
	// blocking per thousand messages.
	CaptureSystemShare  float64 `json:"capture_system_share"`
	CaptureFaultsPerK   float64 `json:"capture_faults_per_1000"`
	CaptureSwitchesPerK float64 `json:"capture_switches_per_1000"`
	AppendsFaultsPerK   float64 `json:"appends_faults_per_1000"`
}

// FloodRun is one run of the read-flood part at one size: the same burst
// captured by one voik without, then with, a flood of FETCH requests from
// another connection; what the flood got; and voik's anonymous RSS at its
// peak in each phase, beside its reply budget, which is what bounds the
// memory replies may take.
type FloodRun struct {
	Size     int `json:"size"`
	Run      int `json:"run"`        // which repeat
	Messages int `json:"messages"`   // the burst of each phase
	History  int `json:"history"`    // records of the subject the flood reads
	Rate     int `json:"flood_rate"` // FETCH requests a second
	// Capture rate (first publish to last record stored) and messages
	// lost, without and with the flood.
	NoFloodMsgPerS float64 `json:"no_flood_msg_per_s"`
	NoFloodLost    int     `json:"no_flood_lost"`
	FloodMsgPerS   float64 `json:"flood_msg_per_s"`
	FloodLost      int     `json:"flood_lost"`
	Ratio          float64 `json:"ratio"` // FloodMsgPerS / NoFloodMsgPerS
	// Peak anonymous RSS of voik in each phase, sampled every 20 ms; 0
	// when voik ran in this process (not measured).
	NoFloodPeakAnonRSS int64 `json:"no_flood_peak_anon_rss"`
	FloodPeakAnonRSS   int64 `json:"flood_peak_anon_rss"`
	ReplyBudget        int64 `json:"reply_budget"` // VOIK_REPLY_BUDGET of the voik under test
	// The flood, from its start to the burst stored: requests sent,
	// replies had by then, of which 503 (overloaded) and other errors.
	FloodSeconds float64 `json:"flood_seconds"`
	Sent         int     `json:"flood_sent"`
	Replies      int64   `json:"flood_replies"`
	Overloaded   int64   `json:"flood_503s"`
	OtherErrors  int64   `json:"flood_other_errors"`
	ReplyBytes   int64   `json:"flood_reply_bytes"`
}
