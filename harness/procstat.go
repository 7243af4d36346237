package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcUsage is what Linux's /proc says about a process: memory, CPU time,
// open files and mappings. The soak and the benchmark watch these grow.
type ProcUsage struct {
	RSS     int64         // resident set now, bytes (VmRSS)
	PeakRSS int64         // high-water mark of the resident set, bytes (VmHWM)
	AnonRSS int64         // anonymous part of RSS (heap, stacks), bytes (RssAnon)
	CPU     time.Duration // user + system time so far
	UserCPU time.Duration // user time alone
	// MinorFaults counts page faults served without I/O: each first store
	// to a page of a writable file mapping is one, and again after
	// writeback write-protects the page.
	MinorFaults int64
	// VoluntarySwitches counts times the process blocked (I/O, locks,
	// channels, page faults that waited).
	VoluntarySwitches int64
	OpenFDs           int // entries of /proc/PID/fd
	Mappings          int // lines of /proc/PID/maps
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// ReadProcUsage reads the usage of process pid from /proc.
func ReadProcUsage(pid int) (ProcUsage, error) {
	var u ProcUsage
	dir := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return u, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, value, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		kb, _ := strconv.ParseInt(fields[0], 10, 64)
		switch name {
		case "VmRSS":
			u.RSS = kb << 10
		case "VmHWM":
			u.PeakRSS = kb << 10
		case "RssAnon":
			u.AnonRSS = kb << 10
		}
	}
	// Context switches are counted per thread.
	tasks, _ := os.ReadDir(dir + "/task")
	for _, task := range tasks {
		status, err := os.ReadFile(dir + "/task/" + task.Name() + "/status")
		if err != nil {
			continue // the thread ended
		}
		sc := bufio.NewScanner(bytes.NewReader(status))
		for sc.Scan() {
			if value, ok := strings.CutPrefix(sc.Text(), "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
				u.VoluntarySwitches += n
			}
		}
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces; count from after it.
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return u, fmt.Errorf("%s/stat: no command name", dir)
	}
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 13 { // fields[0] is field 3 (state); minflt is 10, utime 14, stime 15
		return u, fmt.Errorf("%s/stat: %d fields", dir, len(fields))
	}
	minflt, _ := strconv.ParseInt(fields[7], 10, 64)
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	u.CPU = time.Duration(utime+stime) * time.Second / clockTicks
	u.UserCPU = time.Duration(utime) * time.Second / clockTicks
	u.MinorFaults = minflt
	fds, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return u, err
	}
	u.OpenFDs = len(fds)
	maps, err := os.ReadFile(dir + "/maps")
	if err != nil {
		return u, err
	}
	u.Mappings = bytes.Count(maps, []byte{'\n'})
	return u, nil
}

// Usage reads the running child's ProcUsage.
func (p *VoikProcess) Usage() (ProcUsage, error) { return ReadProcUsage(p.PID()) }

// MachineCPU is the machine's CPU time so far, from the first line of
// /proc/stat, in clock ticks summed over every CPU: Busy is all but idle
// and iowait. Two readings give how saturated the machine was between
// them (Saturation).
type MachineCPU struct {
	Busy, Total uint64
	CPUs        int
}

// ReadMachineCPU reads /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	var m MachineCPU
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m, err
	}
	for i, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if i == 0 {
			if fields[0] != "cpu" || len(fields) < 6 {
				return m, fmt.Errorf("/proc/stat: first line %q", line)
			}
			for j, f := range fields[1:] {
				v, err := strconv.ParseUint(f, 10, 64)
				if err != nil {
					return m, fmt.Errorf("/proc/stat: %q: %w", line, err)
				}
				m.Total += v
				if j != 3 && j != 4 { // idle, iowait
					m.Busy += v
				}
			}
			continue
		}
		if strings.HasPrefix(fields[0], "cpu") {
			m.CPUs++
		}
	}
	return m, nil
}

// Saturation is the share of the machine's CPU time that was busy from
// m to later, 0 to 1.
func (m MachineCPU) Saturation(later MachineCPU) float64 {
	if later.Total <= m.Total {
		return 0
	}
	return float64(later.Busy-m.Busy) / float64(later.Total-m.Total)
}

// DiskBytes is what the files under dir take on disk (allocated blocks,
// as du counts them: preallocated space included, holes not).
func DiskBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}
