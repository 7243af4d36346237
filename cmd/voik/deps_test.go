package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The edges between voik's packages are part of its design: the storage
// engine knows nothing of NATS, the wire types nothing of storage, the
// settings nothing of any other part, and a Go program that imports the
// client gets neither the service nor the storage engine. This test fails
// when an import brings one of those in, directly or through another
// package.
func TestPackageEdges(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH to list dependencies with")
	}
	const module = "github.com/voik/voik"
	for _, tc := range []struct {
		pkg       string
		forbidden func(dep string) bool
		rule      string
	}{
		{"config", func(dep string) bool { return strings.HasPrefix(dep, module+"/") && dep != module+"/config" },
			"config imports no other voik package"},
		{"logstore", func(dep string) bool { return strings.HasPrefix(dep, "github.com/nats-io/") },
			"logstore knows nothing of NATS"},
		{"messages", func(dep string) bool { return dep == module+"/logstore" || dep == module+"/sidecar" },
			"messages knows nothing of storage"},
		{"client", func(dep string) bool { return dep == module+"/sidecar" || dep == module+"/logstore" },
			"the client imports neither the service nor the storage engine"},
		{"harness/cmd/voikbench", func(dep string) bool { return dep == "testing" },
			"the benchmark command does not link the testing package"},
	} {
		out, err := exec.Command(goTool, "list", "-deps", module+"/"+tc.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", tc.pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if tc.forbidden(dep) {
				t.Errorf("%s depends on %s, but %s", tc.pkg, dep, tc.rule)
			}
		}
	}
}
