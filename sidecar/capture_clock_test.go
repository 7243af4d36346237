package sidecar

import (
	"testing"
	"time"
)

// waitForClockPast returns once time.Now is after t: a later reading of
// the clock then differs from t.
func waitForClockPast(t time.Time) {
	for !time.Now().After(t) {
	}
}

func TestReceiveTimeIsReadForAMessageNotQueuedBehindAnother(t *testing.T) {
	var b captureBatch
	first := b.receiveTime(false) // alone: nothing queued behind it
	waitForClockPast(first)
	if second := b.receiveTime(false); !second.After(first) {
		t.Fatalf("a message handled with nothing queued before it got %v, the time of the one before (%v)", second, first)
	}
}

func TestReceiveTimeIsSharedWithinADrainAndReadAgainEveryClockEvery(t *testing.T) {
	var b captureBatch
	start := b.receiveTime(true) // the first of a drain: more queued behind it
	waitForClockPast(start)
	last := start
	for i := 1; i < clockEvery; i++ {
		got := b.receiveTime(true)
		if !got.Equal(start) {
			t.Fatalf("message %d of a drain: %v, want the drain's reading %v", i, got, start)
		}
		last = got
	}
	next := b.receiveTime(true)
	if !next.After(last) {
		t.Fatalf("message %d of a drain: %v, want a new reading after %v", clockEvery, next, last)
	}
	// The message after the last of a drain (which had nothing queued
	// behind it) is not part of the drain: a reading of its own.
	b.receiveTime(false)
	waitForClockPast(next)
	tail := b.receiveTime(true)
	waitForClockPast(tail)
	if after := b.receiveTime(false); !after.Equal(tail) {
		t.Fatalf("the last message of a drain got %v, want the drain's reading %v", after, tail)
	}
	waitForClockPast(tail)
	if alone := b.receiveTime(false); !alone.After(tail) {
		t.Fatalf("a message after a drain ended got %v, want a new reading after %v", alone, tail)
	}
}
