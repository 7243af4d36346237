package e2e

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/messages"
)

// longSubject is a valid subject of exactly n bytes: tokens of 39 bytes.
func longSubject(n int) string {
	b := []byte(strings.Repeat(strings.Repeat("t", 39)+".", n/40+1)[:n])
	if b[n-1] == '.' {
		b[n-1] = 't'
	}
	return string(b)
}

func TestUnusualSubjectsRoundTripAndNothingIsWrittenOutsideTheDataDir(t *testing.T) {
	// Not parallel: it restarts voik.
	e := start(t)
	subjects := []string{
		"files/etc/passwd",
		"/absolute/path",
		"a/b.c/d",
		"%2e%2e.%2F",
		"~tilde.name~",
		"-leading-dash",
		"back\\slash",
		"a:b.c;d",
		"名前.日本語",
		"emoji.🎉.ünïcödé",
		"Case.Sensitive",
		"case.sensitive",
		"CASE.SENSITIVE",
		"with\x01control",
		"quote\".and'",
		longSubject(1000),
		longSubject(1000)[:999] + "u", // same 200-byte directory prefix, another subject
		longSubject(255),
		"x",
	}
	for i, s := range subjects {
		ack := e.appendAcked(s, nats.Header{"I": {string(rune('a' + i))}}, []byte(s))
		if ack.Subject != s || ack.Offset != 0 {
			t.Fatalf("ack for %.40q: %+v", s, ack)
		}
	}
	// ".." and "." only exist as empty tokens, which NATS does not route:
	// they cannot reach voik, and so cannot climb out of the data dir.
	for _, s := range []string{"../../etc/passwd", "..", ".", "a/../../b", "../outside"} {
		e.publish(s, nil, []byte("escape?"))
	}
	e.appendAcked("x", nil, []byte("sync")) // everything before it was handled

	check := func(when string) {
		t.Helper()
		want := append([]string(nil), subjects...)
		sort.Strings(want)
		if got := e.subjects(">"); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: SUBJECTS\n got %q\nwant %q", when, got, want)
		}
		for i, s := range subjects {
			reply := e.fetch(s, messages.FetchRequest{MaxMessages: 1})
			if reply.Subject != s || len(reply.Records) != 1 || string(reply.Records[0].Data) != s ||
				reply.Records[0].Headers["I"][0] != string(rune('a'+i)) {
				t.Fatalf("%s: FETCH %.40q: %+v", when, s, reply)
			}
			info, err := e.api.Info(context.Background(), s)
			if err != nil || info.Subject != s {
				t.Fatalf("%s: INFO %.40q: %+v, %v", when, s, info, err)
			}
		}
	}
	check("before restart")
	e.restart()
	check("after restart")

	// Everything under the test's temporary directory is the data dir.
	dataDir, err := filepath.Abs(e.voik.Config.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(dataDir)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != root && path != dataDir && !strings.HasPrefix(path, dataDir+string(filepath.Separator)) {
			t.Errorf("written outside the data dir: %s", path)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			t.Errorf("a symlink in the data dir: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, escape := range []string{filepath.Join(root, "..", "etc"), filepath.Join(root, "..", "outside"), filepath.Join(root, "etc")} {
		if _, err := os.Lstat(escape); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists: %v", escape, err)
		}
	}
	// Every name in the data dir is a plain one: no separators were
	// interpreted, no hidden or parent entries.
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(subjects) {
		t.Errorf("%d entries in the data dir for %d subjects", len(entries), len(subjects))
	}
	for _, entry := range entries {
		if !entry.IsDir() || strings.HasPrefix(entry.Name(), ".") || len(entry.Name()) > 255 {
			t.Errorf("data dir entry %q", entry.Name())
		}
	}
}
