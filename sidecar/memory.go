package sidecar

import (
	"runtime/debug"
	"time"
)

// voik runs its collector at GOGC=400 (capture makes much short-lived
// garbage; see cmd's gc.go), which lets the heap grow to five times what
// is live. Under a read flood, live memory is the reply budget's pages and
// what capture has queued, and five times that is gigabytes. The memory
// governor holds the heap instead near what voik needs now, as a soft
// memory limit for the Go runtime:
//
//	memoryBase + VOIK_REPLY_BUDGET + 2 × the bytes capture has queued
//
// never above the ceiling (from the container's limit, 0: none). The
// queued bytes count twice so that capture's own garbage has room: a
// limit below what is live would make the collector run without pause and
// slow capture further. The limit follows the queue every
// memoryGovernorTick.
const (
	memoryBase         = 128 << 20
	memoryGovernorTick = 100 * time.Millisecond
)

// GovernMemoryLimit makes Run keep the Go runtime's soft memory limit as
// described above, never above ceiling (0: no ceiling). The limit is the
// process's: only the voik binary calls this, and not when GOMEMLIMIT is
// set.
func (s *Sidecar) GovernMemoryLimit(ceiling int64) {
	s.memoryCeiling, s.governMemory = ceiling, true
}

// memoryLimit is the soft limit for queued bytes of capture.
func (s *Sidecar) memoryLimit(queued int64) int64 {
	limit := memoryBase + int64(s.cfg.ReplyBudget) + 2*queued
	if s.memoryCeiling > 0 {
		limit = min(limit, s.memoryCeiling)
	}
	return limit
}

// governMemoryUntil sets the soft memory limit every memoryGovernorTick
// until done is closed.
func (s *Sidecar) governMemoryUntil(done <-chan struct{}) {
	tick := time.NewTicker(memoryGovernorTick)
	defer tick.Stop()
	last := int64(-1)
	for {
		var queued int64
		if c := s.capture.Load(); c != nil {
			queued = c.queuedBytes()
		}
		if limit := s.memoryLimit(queued); limit != last {
			debug.SetMemoryLimit(limit)
			last = limit
		}
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}
