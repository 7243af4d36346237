package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// writeFiles makes files (path relative to dir -> content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCgroupMemoryLimitIsTheSmallestOnThePathToTheRoot(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  int64
		from  string // relative to the fake root
	}{
		{"v2 in a cgroup namespace", map[string]string{
			"self": "0::/\n", "fs/memory.max": "1073741824\n",
		}, 1 << 30, "fs/memory.max"},
		{"v2 without a limit", map[string]string{
			"self": "0::/\n", "fs/memory.max": "max\n",
		}, 0, ""},
		{"v2, a parent's limit is lower", map[string]string{
			"self":                           "0::/kubepods/pod1/c1\n",
			"fs/kubepods/pod1/c1/memory.max": "max\n",
			"fs/kubepods/pod1/memory.max":    "536870912\n",
			"fs/kubepods/memory.max":         "2147483648\n",
		}, 512 << 20, "fs/kubepods/pod1/memory.max"},
		{"v1 memory controller", map[string]string{
			"self": "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n",
			"fs/memory/docker/abc/memory.limit_in_bytes": "268435456\n",
			"fs/memory/memory.limit_in_bytes":            "9223372036854771712\n",
		}, 256 << 20, "fs/memory/docker/abc/memory.limit_in_bytes"},
		{"v1 without a limit", map[string]string{
			"self": "4:memory:/\n", "fs/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, ""},
		{"no cgroup files", map[string]string{"self": "0::/\n"}, 0, ""},
		{"garbage", map[string]string{"self": "nonsense\n0::relative\n", "fs/memory.max": "12x\n"}, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			got, from := cgroupMemoryLimit(filepath.Join(dir, "fs"), filepath.Join(dir, "self"))
			wantFrom := ""
			if tc.from != "" {
				wantFrom = filepath.Join(dir, tc.from)
			}
			if got != tc.want || from != wantFrom {
				t.Fatalf("limit %d from %q, want %d from %q", got, from, tc.want, wantFrom)
			}
		})
	}
	if got, _ := cgroupMemoryLimit(t.TempDir(), "/nonexistent/cgroup"); got != 0 {
		t.Fatalf("no /proc/self/cgroup: limit %d, want 0", got)
	}
}

// restoreGC puts the collector back as it was when the test ends.
func restoreGC(t *testing.T) {
	gogc := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(gogc)
		debug.SetMemoryLimit(limit)
	})
}

func TestTuneGCSetsVoiksDefaultsBelowTheContainerLimit(t *testing.T) {
	restoreGC(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"self": "0::/\n", "fs/memory.max": "1000000000\n"})
	s := tuneGC(func(string) string { return "" }, filepath.Join(dir, "fs"), filepath.Join(dir, "self"))
	if got := debug.SetGCPercent(100); got != defaultGOGC || s.GOGC != "400" {
		t.Fatalf("GOGC %d (reported %q), want %d", got, s.GOGC, defaultGOGC)
	}
	if got := debug.SetMemoryLimit(-1); got != 800_000_000 || s.MemoryLimit != got {
		t.Fatalf("memory limit %d (reported %d), want 80%% of the cgroup's 1e9", got, s.MemoryLimit)
	}
}

func TestTuneGCLeavesWhatTheEnvironmentSets(t *testing.T) {
	restoreGC(t)
	debug.SetGCPercent(50) // as the runtime would have from GOGC=50
	debug.SetMemoryLimit(123 << 20)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"self": "0::/\n", "fs/memory.max": "1000000000\n"})
	env := map[string]string{"GOGC": "50", "GOMEMLIMIT": "123MiB"}
	s := tuneGC(func(k string) string { return env[k] }, filepath.Join(dir, "fs"), filepath.Join(dir, "self"))
	if got := debug.SetGCPercent(100); got != 50 {
		t.Fatalf("GOGC %d, want the environment's 50", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 123<<20 {
		t.Fatalf("memory limit %d, want the environment's", got)
	}
	if s.GOGC != "50 (GOGC)" || s.MemoryLimit != 0 || s.LimitFrom != "GOMEMLIMIT" {
		t.Fatalf("reported %+v", s)
	}
}

func TestTuneGCWithoutAContainerLimitSetsNoMemoryLimit(t *testing.T) {
	restoreGC(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"self": "0::/\n", "fs/memory.max": "max\n"})
	s := tuneGC(func(string) string { return "" }, filepath.Join(dir, "fs"), filepath.Join(dir, "self"))
	if got := debug.SetMemoryLimit(-1); got != 1<<63-1 || s.MemoryLimit != 0 || s.LimitFrom != "" {
		t.Fatalf("memory limit %d, reported %+v; want none", got, s)
	}
}
