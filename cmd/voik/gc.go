package main

import (
	"bufio"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// voik's heap is small and short-lived: what it keeps is a few MiB of
// indexes and buffers, while nats.go allocates every message it delivers
// (its data, the Msg, a header map). At Go's default GOGC=100 a capture
// burst at 1 KiB runs a collection every few megabytes, each marking the
// messages still queued. GOGC=400 collects a quarter as often; capture at
// 1 KiB ran about 10% faster (2-18% over ten alternating voikbench runs).
// The memory it costs is bounded by a memory limit below a container's:
// near the limit the collector runs as often as it must.
const (
	defaultGOGC = 400
	// limitShare of a cgroup's memory limit is voik's heap limit; the
	// rest is for what the Go runtime does not count (thread stacks,
	// mapped segment pages, the kernel's buffers).
	limitShare = 0.8
)

// gcSettings is how the garbage collector was set, for the start-up log.
type gcSettings struct {
	GOGC        string // as set, or "GOGC" when the environment set it
	MemoryLimit int64  // bytes; 0: none set by voik
	LimitFrom   string // where the limit came from
}

// tuneGC applies defaultGOGC unless GOGC is set, and a memory limit of
// limitShare of the cgroup's unless GOMEMLIMIT is set. cgroupRoot is
// /sys/fs/cgroup; selfCgroup is /proc/self/cgroup.
func tuneGC(getenv func(string) string, cgroupRoot, selfCgroup string) gcSettings {
	var s gcSettings
	if v := getenv("GOGC"); v != "" {
		s.GOGC = v + " (GOGC)"
	} else {
		debug.SetGCPercent(defaultGOGC)
		s.GOGC = strconv.Itoa(defaultGOGC)
	}
	if getenv("GOMEMLIMIT") != "" {
		s.LimitFrom = "GOMEMLIMIT"
		return s
	}
	limit, from := cgroupMemoryLimit(cgroupRoot, selfCgroup)
	if limit <= 0 {
		return s
	}
	s.MemoryLimit, s.LimitFrom = int64(float64(limit)*limitShare), from
	debug.SetMemoryLimit(s.MemoryLimit)
	return s
}

// cgroupMemoryLimit is the smallest memory limit on this process's cgroup
// and its ancestors (cgroup v2: memory.max; v1: memory.limit_in_bytes of
// the memory controller), and the file it was read from; 0 when none is
// set or the files cannot be read.
func cgroupMemoryLimit(root, selfCgroup string) (int64, string) {
	f, err := os.Open(selfCgroup)
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	var best int64
	var from string
	take := func(file string) {
		if n, ok := readLimit(file); ok && (best == 0 || n < best) {
			best, from = n, file
		}
	}
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(lines.Text(), ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/") {
			continue
		}
		var dir, file string
		switch {
		case parts[0] == "0" && parts[1] == "": // v2, unified
			dir, file = root, "memory.max"
		case slices.Contains(strings.Split(parts[1], ","), "memory"): // v1
			dir, file = filepath.Join(root, "memory"), "memory.limit_in_bytes"
		default:
			continue
		}
		// Inside a cgroup namespace the path is "/" and the mount is the
		// container's own cgroup; otherwise walk from the process's cgroup
		// up to the root, where a limit of any ancestor applies too.
		for p := path.Clean(parts[2]); ; p = path.Dir(p) {
			take(filepath.Join(dir, filepath.FromSlash(p), file))
			if p == "/" {
				break
			}
		}
	}
	return best, from
}

// readLimit reads a cgroup memory limit: "max" (v2) and the huge values
// v1 uses for none are no limit.
func readLimit(file string) (int64, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0, false
	}
	return n, true
}
