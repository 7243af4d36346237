package config

import (
	"fmt"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes written as a plain number or with a unit:
// "512", "64KiB", "64MiB", "2GiB", "1GB" (KB, MB, GB are powers of ten).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// SetValue parses a size.
func (b *ByteSize) SetValue(s string) error {
	s = strings.TrimSpace(s)
	factor := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, factor = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/factor {
		return fmt.Errorf("%q is not a size (want e.g. 512, 64KiB, 64MiB, 2GiB)", s)
	}
	*b = ByteSize(n * factor)
	return nil
}

// UnmarshalText parses a YAML value.
func (b *ByteSize) UnmarshalText(text []byte) error { return b.SetValue(string(text)) }

func (b ByteSize) String() string {
	for _, u := range byteUnits[:4] {
		if b >= ByteSize(u.factor) && int64(b)%u.factor == 0 && (u.factor == 1<<40 || int64(b)%(u.factor<<10) != 0) {
			return fmt.Sprintf("%d%s", int64(b)/u.factor, u.suffix)
		}
	}
	return strconv.FormatInt(int64(b), 10)
}
