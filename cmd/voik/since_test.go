package main

import (
	"testing"
	"time"
)

// --since takes the durations the settings take, days included, or a time.
func TestSinceTakesDaysLikeTheSettings(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"10m":                  now.Add(-10 * time.Minute),
		"1d":                   now.Add(-24 * time.Hour),
		"7d12h":                now.Add(-180 * time.Hour),
		"2026-12-01T00:00:00Z": time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || got != want.UnixNano() {
			t.Errorf("--since %s: %v, %v; want %v", in, time.Unix(0, got).UTC(), err, want)
		}
	}
	if _, err := parseSince("yesterday", now); err == nil {
		t.Error("--since yesterday accepted")
	}
}
