package sidecar

import (
	"testing"

	"github.com/voik/voik/config"
)

func TestMemoryLimitFollowsCapturesQueueUnderTheCeiling(t *testing.T) {
	cfg := &config.Config{ReplyBudget: 256 << 20}
	for _, tc := range []struct {
		name            string
		ceiling, queued int64
		want            int64
	}{
		{"idle, no container limit", 0, 0, 128<<20 + 256<<20},
		{"a backlog raises it by twice its bytes", 0, 100 << 20, 128<<20 + 256<<20 + 200<<20},
		{"never above the container's ceiling", 450 << 20, 100 << 20, 450 << 20},
	} {
		s := &Sidecar{cfg: cfg, memoryCeiling: tc.ceiling}
		if got := s.memoryLimit(tc.queued); got != tc.want {
			t.Errorf("%s: limit %d MiB, want %d MiB", tc.name, got>>20, tc.want>>20)
		}
	}
}
