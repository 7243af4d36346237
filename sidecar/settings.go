package sidecar

import (
	"fmt"
	"log/slog"

	"github.com/voik/voik/config"
	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// CheckSettings judges the settings whose rules belong to the parts voik
// ties together: the capture filters and the API prefix (the subject
// grammar of package messages), the sync policy and the segment size (the
// storage engine's). Pass it to config.Load, so that every bad setting is
// reported at once.
func CheckSettings(c *config.Config) []error {
	var problems []error
	if _, err := messages.ParseFilters(c.Subjects); err != nil {
		problems = append(problems, fmt.Errorf("%s: %w", c.Name("VOIK_SUBJECTS"), err))
	}
	if err := messages.CheckPrefix(c.APIPrefix); err != nil {
		problems = append(problems, fmt.Errorf("%s %w", c.Name("VOIK_API_PREFIX"), err))
	}
	if _, err := logstore.ParseSyncPolicy(c.Sync); err != nil {
		problems = append(problems, fmt.Errorf("%s %q: want always, batch, interval or none", c.Name("VOIK_SYNC"), c.Sync))
	}
	if c.SegmentSize < logstore.MinSegmentBytes || c.SegmentSize > logstore.MaxSegmentBytes {
		problems = append(problems, fmt.Errorf("%s %v: want a size from %v to %d (4GiB less a byte)", c.Name("VOIK_SEGMENT_SIZE"),
			c.SegmentSize, config.ByteSize(logstore.MinSegmentBytes), logstore.MaxSegmentBytes))
	}
	return problems
}

// storeOptions are the logstore options the settings ask for; the
// settings were checked (CheckSettings).
func storeOptions(c *config.Config, logger *slog.Logger) (logstore.Options, error) {
	policy, err := logstore.ParseSyncPolicy(c.Sync)
	if err != nil {
		return logstore.Options{}, &ConfigError{fmt.Errorf("VOIK_SYNC %q: %v", c.Sync, err)}
	}
	return logstore.Options{
		SegmentBytes: int64(c.SegmentSize),
		Sync:         policy,
		SyncInterval: c.SyncInterval,
		Retention: logstore.Retention{
			MaxAge:      c.RetentionMaxAge,
			MaxBytes:    int64(c.RetentionMaxBytes),
			MaxMessages: c.RetentionMaxMessages,
		},
		MaxOpenLogs: c.MaxOpenLogs,
		Logger:      logger,
	}, nil
}
