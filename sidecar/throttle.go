package sidecar

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// throttledLogger writes at most one line a second per message text, so
// that an error hit by every message (a full disk) cannot flood the log;
// the next line says how many were suppressed.
type throttledLogger struct {
	logger *slog.Logger
	mu     sync.Mutex
	last   map[string]time.Time
	quiet  map[string]int
}

func newThrottledLogger(logger *slog.Logger) *throttledLogger {
	return &throttledLogger{logger: logger, last: map[string]time.Time{}, quiet: map[string]int{}}
}

func (t *throttledLogger) Error(msg string, args ...any) { t.log(slog.LevelError, msg, args) }

func (t *throttledLogger) Warn(msg string, args ...any) { t.log(slog.LevelWarn, msg, args) }

func (t *throttledLogger) log(level slog.Level, msg string, args []any) {
	now := time.Now()
	t.mu.Lock()
	if now.Sub(t.last[msg]) < time.Second {
		t.quiet[msg]++
		t.mu.Unlock()
		return
	}
	suppressed := t.quiet[msg]
	t.last[msg] = now
	t.quiet[msg] = 0
	t.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	t.logger.Log(context.Background(), level, msg, args...)
}
