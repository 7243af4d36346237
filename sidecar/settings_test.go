package sidecar_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/voik/voik/config"
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
		{"segment too small", map[string]string{"VOIK_SEGMENT_SIZE": "1KiB"}, []string{"VOIK_SEGMENT_SIZE", "must be between"}},
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
