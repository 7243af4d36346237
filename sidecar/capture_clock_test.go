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

func TestReceiveTimeIsReadForAMessageNotCountedInTheQueue(t *testing.T) {
	var b captureBatch
	first := b.receiveTime() // nothing counted: a reading of its own
	waitForClockPast(first)
	if second := b.receiveTime(); !second.After(first) {
		t.Fatalf("a message not counted in NATS's queue got %v, the time of the one before (%v)", second, first)
	}
}

// Messages counted in the queue share readings taken after the count,
// clockEvery at most per reading, and never get a reading from before
// the count: a message that arrived after a reading must not be stamped
// with it.
func TestReceiveTimeOfCountedMessagesIsSharedAndNeverBeforeTheCount(t *testing.T) {
	var b captureBatch
	stale := b.receiveTime() // a reading from before the count
	waitForClockPast(stale)
	beforeCount := time.Now()
	const queued = 2*clockEvery + 5
	b.counted(queued)
	var readings []time.Time
	for i := range queued {
		got := b.receiveTime()
		if got.Before(beforeCount) {
			t.Fatalf("message %d of %d counted: %v, before the count at %v", i, queued, got, beforeCount)
		}
		if i%clockEvery == 0 {
			if len(readings) > 0 && !got.After(readings[len(readings)-1]) {
				t.Fatalf("message %d: %v, want a new reading after %v", i, got, readings[len(readings)-1])
			}
			readings = append(readings, got)
		} else if want := readings[len(readings)-1]; !got.Equal(want) {
			t.Fatalf("message %d: %v, want the shared reading %v", i, got, want)
		}
		waitForClockPast(got)
	}
	// Past the counted messages, each gets a reading of its own.
	last := readings[len(readings)-1]
	if got := b.receiveTime(); !got.After(last) {
		t.Fatalf("the message after the counted ones got %v, want a new reading after %v", got, last)
	}
}
