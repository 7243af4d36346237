package sidecar_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/voik/voik/config"
	"github.com/voik/voik/logstore"
	"github.com/voik/voik/sidecar"
)

// Settings whose rules belong to the subject grammar or the storage
// engine are judged by sidecar.CheckSettings, passed to config.Load, and
// reported in the same single line as config's own problems.
func TestSettingsOfThePartsAreReportedWithTheRest(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"bad filter", map[string]string{"VOIK_SUBJECTS": "orders..eu"}, []string{`VOIK_SUBJECTS: "orders..eu" is not a valid subject filter`}},
		{"wildcard not last", map[string]string{"VOIK_SUBJECTS": "a.>.b"}, []string{"VOIK_SUBJECTS", "not a valid subject filter"}},
		{"prefix with wildcard", map[string]string{"VOIK_API_PREFIX": "VOIK.*"}, []string{"VOIK_API_PREFIX", "without wildcards"}},
		{"prefix under _INBOX.", map[string]string{"VOIK_API_PREFIX": "_INBOX.api"}, []string{"VOIK_API_PREFIX", "may not start with _INBOX. or $"}},
		{"bad sync", map[string]string{"VOIK_SYNC": "sometimes"}, []string{`VOIK_SYNC "sometimes"`}},
		{"segment too small", map[string]string{"VOIK_SEGMENT_SIZE": "1KiB"}, []string{"VOIK_SEGMENT_SIZE 1KiB: want a size from 4KiB"}},
		{"all at once, with config's own", map[string]string{"VOIK_SYNC": "sometimes", "VOIK_API_PREFIX": "VOIK.*", "VOIK_LOG_LEVEL": "loud"},
			[]string{"VOIK_SYNC", "VOIK_API_PREFIX", "VOIK_LOG_LEVEL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, kv := range os.Environ() {
				if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "VOIK_") {
					t.Setenv(name, "")
					os.Unsetenv(name)
				}
			}
			t.Setenv("VOIK_DATA_DIR", filepath.Join(t.TempDir(), "data"))
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := config.Load("", sidecar.CheckSettings)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || strings.Count(msg, "configuration:") != 1 {
				t.Fatalf("want one line with one prefix: %q", msg)
			}
			for _, want := range tc.want {
				if !strings.Contains(msg, want) {
					t.Errorf("%q does not say %q", msg, want)
				}
			}
		})
	}
}

// voik's defaults for the storage engine are the engine's own, written
// once each: VOIK_SEGMENT_SIZE and VOIK_MAX_OPEN_LOGS in config's tags,
// the same figures as logstore's exported defaults.
func TestStorageDefaultsAreTheEnginesOwn(t *testing.T) {
	d := config.Defaults()
	if int64(d.SegmentSize) != logstore.DefaultSegmentBytes || d.MaxOpenLogs != logstore.DefaultMaxOpenLogs {
		t.Fatalf("config's defaults: segment %d, open logs %d; logstore's: %d, %d",
			d.SegmentSize, d.MaxOpenLogs, logstore.DefaultSegmentBytes, logstore.DefaultMaxOpenLogs)
	}
	if problems := sidecar.CheckSettings(d); len(problems) > 0 {
		t.Fatalf("the defaults do not pass the checks: %v", problems)
	}
}
