package logstore

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func openTestEpochs(t *testing.T, path string) *Epochs {
	t.Helper()
	e, err := OpenEpochs(path)
	if err != nil {
		t.Fatalf("OpenEpochs: %v", err)
	}
	return e
}

// Epochs move forward only, each change durable when Assign returns: a
// reopen finds the same list, and assigning the latest again (a restart)
// changes nothing.
func TestEpochsAreDurableAndMoveForwardOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "epochs")
	e := openTestEpochs(t, path)
	if _, ok := e.Latest(); ok {
		t.Fatal("a new list has a latest epoch")
	}
	for _, a := range []EpochStart{{1, 0}, {4, 10}, {4, 10}, {9, 10}} {
		if err := e.Assign(a.Epoch, a.Start); err != nil {
			t.Fatalf("Assign(%d, %d): %v", a.Epoch, a.Start, err)
		}
	}
	want := []EpochStart{{1, 0}, {4, 10}, {9, 10}}
	for _, bad := range []EpochStart{{9, 11}, {8, 20}, {10, 9}} {
		if err := e.Assign(bad.Epoch, bad.Start); !errors.Is(err, ErrEpochOrder) {
			t.Errorf("Assign(%d, %d) after epoch 9 at 10: %v", bad.Epoch, bad.Start, err)
		}
	}
	if got := e.List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("list %v, want %v", got, want)
	}
	if got := openTestEpochs(t, path).List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("reopened: %v, want %v", got, want)
	}
}

// EndOffsetFor is the answer a leader gives a rejoining member (KIP-279):
// where the member's epoch, or the latest one before it, ended here.
func TestEpochsEndOffsetFor(t *testing.T) {
	e := openTestEpochs(t, filepath.Join(t.TempDir(), "epochs"))
	for _, a := range []EpochStart{{2, 0}, {3, 7}, {5, 7}, {8, 20}} {
		if err := e.Assign(a.Epoch, a.Start); err != nil {
			t.Fatal(err)
		}
	}
	const end = 31
	for _, tc := range []struct {
		epoch     uint64
		held      EpochStart
		endOffset uint64
		found     bool
	}{
		{1, EpochStart{}, 0, false},     // older than anything held
		{2, EpochStart{2, 0}, 7, true},  // ended where epoch 3 began
		{3, EpochStart{3, 7}, 7, true},  // an epoch in which nothing was written
		{4, EpochStart{3, 7}, 7, true},  // never seen here: the one before it
		{5, EpochStart{5, 7}, 20, true}, //
		{8, EpochStart{8, 20}, end, true},
		{12, EpochStart{8, 20}, end, true}, // newer than the latest: the log's end
	} {
		held, endOffset, found := e.EndOffsetFor(tc.epoch, end)
		if held != tc.held || endOffset != tc.endOffset || found != tc.found {
			t.Errorf("EndOffsetFor(%d): %v %d %v, want %v %d %v", tc.epoch, held, endOffset, found, tc.held, tc.endOffset, tc.found)
		}
	}
}

// KIP-101's first scenario, on the lists alone: leader A wrote offsets
// 0..2 in epoch 0, follower B held 0..1 when A died; B leads epoch 1 from
// offset 2 and writes there. A, back, asks B where epoch 0 ended (2), so
// A drops its offset 2 (never committed) and forgets nothing else: its
// log and epochs then match B's from the next copy on. A high watermark
// (Liftbridge's fallback) could have kept A's offset 2 beside B's.
func TestEpochsKIP101ARejoiningMemberTruncatesToWhereItsEpochEnded(t *testing.T) {
	dir := t.TempDir()
	a := openTestEpochs(t, filepath.Join(dir, "a"))
	b := openTestEpochs(t, filepath.Join(dir, "b"))
	for _, e := range []*Epochs{a, b} {
		if err := e.Assign(0, 0); err != nil {
			t.Fatal(err)
		}
	}
	aEnd, bEnd := uint64(3), uint64(2)
	if err := b.Assign(1, bEnd); err != nil { // B leads from its end
		t.Fatal(err)
	}
	bEnd++ // B writes offset 2 in epoch 1
	latest, _ := a.Latest()
	_, truncateTo, found := b.EndOffsetFor(latest.Epoch, bEnd)
	if !found || truncateTo != 2 {
		t.Fatalf("B answers epoch %d ended at %d (%v), want 2", latest.Epoch, truncateTo, found)
	}
	if truncateTo < aEnd {
		aEnd = truncateTo // A's log drops offset 2
		if err := a.TruncateFrom(truncateTo); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Assign(1, 2); err != nil { // copying B's epoch 1 from offset 2
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.List(), b.List()) || aEnd != 2 {
		t.Fatalf("A: end %d, epochs %v; B: epochs %v", aEnd, a.List(), b.List())
	}
}

func TestEpochsTruncateFromForgetsLaterEpochsDurably(t *testing.T) {
	path := filepath.Join(t.TempDir(), "epochs")
	e := openTestEpochs(t, path)
	for _, a := range []EpochStart{{1, 0}, {2, 5}, {3, 9}, {4, 9}} {
		if err := e.Assign(a.Epoch, a.Start); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.TruncateFrom(10); err != nil { // nothing starts at or after 10
		t.Fatal(err)
	}
	if err := e.TruncateFrom(9); err != nil {
		t.Fatal(err)
	}
	want := []EpochStart{{1, 0}, {2, 5}}
	if got := openTestEpochs(t, path).List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after TruncateFrom(9): %v, want %v", got, want)
	}
}

// A crash leaves the list before a change or after it: a temporary file
// that was never renamed is not the list (and is removed). A damaged
// list is corruption, never an empty list.
func TestEpochsFileSurvivesCrashesAndRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "epochs")
	e := openTestEpochs(t, path)
	if err := e.Assign(1, 0); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Crashed after writing the next list, before its rename.
	if err := os.WriteFile(path+".tmp", encodeEpochs([]EpochStart{{1, 0}, {2, 4}}), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := openTestEpochs(t, path).List(); !reflect.DeepEqual(got, []EpochStart{{1, 0}}) {
		t.Fatalf("with an unrenamed temporary file: %v", got)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the temporary file is still there: %v", err)
	}
	for name, damaged := range map[string][]byte{
		"empty":         {},
		"cut short":     good[:len(good)-3],
		"a flipped bit": append(append([]byte{}, good[:20]...), append([]byte{good[20] ^ 1}, good[21:]...)...),
		"zeros":         make([]byte, len(good)),
	} {
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenEpochs(path); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: OpenEpochs gave %v, want corruption", name, err)
		}
	}
}

// FuzzDecodeEpochs: any bytes decode without a panic, to a list that is in
// order, and a list that decodes encodes back to the same bytes.
func FuzzDecodeEpochs(f *testing.F) {
	f.Add(encodeEpochs(nil))
	f.Add(encodeEpochs([]EpochStart{{1, 0}, {3, 7}, {9, 7}}))
	f.Add([]byte("VOIKEPO\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := decodeEpochs(data)
		if err != nil {
			return
		}
		for i := 1; i < len(entries); i++ {
			if entries[i].Epoch <= entries[i-1].Epoch || entries[i].Start < entries[i-1].Start {
				t.Fatalf("decoded out of order: %v", entries)
			}
		}
		if got := encodeEpochs(entries); string(got) != string(data) {
			t.Fatalf("re-encoding differs")
		}
	})
}
