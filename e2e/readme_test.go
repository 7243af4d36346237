package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/voik/voik/harness"
)

// TestREADMEWalkThroughRunsAsWritten runs the commands of the README's
// walk-through as they are written, against a voik of its own, and holds
// what they print against what the README shows: the publish example's
// lines, then every `$ bin/voik …` line and its output. Values that differ
// from run to run (timestamps, the inbox a replay used) are compared by
// shape. The `nats` CLI lines are left out: the publish example beside them
// does the same, and the CLI is not installed here.
//
// Each command runs through bash in the repository root, with NATS_URL and
// VOIK_NATS_URL pointing at the test's server (the README's run uses the
// defaults, 127.0.0.1:4222); `bin/voik` is the binary this test built.
func TestREADMEWalkThroughRunsAsWritten(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	steps := walkThroughSteps(t, string(readme))
	bin := harness.BuildVoik(t)
	e := start(t)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"NATS_URL=" + e.nc.ConnectedUrl(), "VOIK_NATS_URL=" + e.nc.ConnectedUrl()}
	for _, name := range []string{"GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOPROXY", "TMPDIR"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	ran := 0
	for _, step := range steps {
		command := step.command
		if strings.HasPrefix(command, "bin/voik ") {
			command = bin + strings.TrimPrefix(command, "bin/voik")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-c", command)
		cmd.Dir = ".."
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("README: %s\n%v: %s", step.command, err, stderr.String())
		}
		var got []string
		if len(out) > 0 {
			got = strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		}
		if len(step.output) != len(got) {
			t.Fatalf("README: %s\nprints %d lines:\n%s\nthe README shows %d:\n%s", step.command, len(got), out, len(step.output), strings.Join(step.output, "\n"))
		}
		for i := range got {
			if !sameLine(step.output[i], got[i]) {
				t.Errorf("README: %s\nline %d is\n  %s\nthe README shows\n  %s", step.command, i+1, got[i], step.output[i])
			}
		}
		ran++
	}
	if ran < 8 {
		t.Fatalf("ran %d commands of the walk-through; the README has lost its commands or the test its way of finding them", ran)
	}
}

// walkStep is one command of the walk-through and the lines the README
// shows it printing (none: it prints nothing the README shows).
type walkStep struct {
	command string
	output  []string
}

// walkThroughSteps reads the sh blocks of the README's walk-through: in a
// block of `$ ` lines, each is a command and the lines after it up to a
// blank line its output; in others every line is a command, and a
// comment line after one (`# map[…]`) is its output.
func walkThroughSteps(t *testing.T, readme string) []walkStep {
	begin := strings.Index(readme, "### Walk-through")
	end := strings.Index(readme[begin+1:], "\n## ")
	if begin < 0 || end < 0 {
		t.Fatal("README.md has no walk-through section")
	}
	section := readme[begin : begin+1+end]
	var steps []walkStep
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		prompted := regexp.MustCompile(`(?m)^\$ `).MatchString(block[1])
		var current *walkStep
		for _, line := range strings.Split(block[1], "\n") {
			command := !prompted && line != "" && !strings.HasPrefix(line, "#") || strings.HasPrefix(line, "$ ")
			switch {
			case command && strings.HasPrefix(strings.TrimPrefix(line, "$ "), "nats "):
				current = nil // the nats CLI is not installed here
			case command:
				steps = append(steps, walkStep{command: stripComment(strings.TrimPrefix(line, "$ "))})
				current = &steps[len(steps)-1]
			case line == "":
				current = nil
			case current != nil && !prompted && strings.HasPrefix(line, "# "):
				current.output = append(current.output, stripComment(strings.TrimPrefix(line, "# ")))
			case current != nil && prompted:
				current.output = append(current.output, line)
			}
		}
	}
	return steps
}

// stripComment drops a trailing "   # …" or "   <- …" remark, kept apart
// from the text by at least two spaces.
func stripComment(line string) string {
	for _, mark := range []string{"  #", "  <-"} {
		if i := strings.Index(line, mark); i >= 0 {
			line = line[:i]
		}
	}
	return strings.TrimSpace(line)
}

// shapeOnly are the fields whose values change from run to run.
var shapeOnly = map[string]bool{"ts": true, "time": true, "first_ts": true, "last_ts": true, "deliver": true}

var ackTimestamp = regexp.MustCompile(`ts:\d+`)

// sameLine compares a printed line with the README's: JSON field by field
// (shapeOnly fields by type), anything else as text (an ack's ts aside).
func sameLine(want, got string) bool {
	var w, g any
	if json.Unmarshal([]byte(want), &w) != nil || json.Unmarshal([]byte(got), &g) != nil {
		return ackTimestamp.ReplaceAllString(want, "ts:N") == ackTimestamp.ReplaceAllString(got, "ts:N")
	}
	wm, wok := w.(map[string]any)
	gm, gok := g.(map[string]any)
	if !wok || !gok {
		return reflect.DeepEqual(w, g)
	}
	if len(wm) != len(gm) {
		return false
	}
	for k, wv := range wm {
		gv, ok := gm[k]
		if !ok {
			return false
		}
		if shapeOnly[k] {
			if reflect.TypeOf(wv) != reflect.TypeOf(gv) {
				return false
			}
			continue
		}
		if !reflect.DeepEqual(wv, gv) {
			return false
		}
	}
	return true
}
