package msgp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Every form decodes, with MessagePack's own decoder, to what was
// appended, at each length where the form changes, and StringSize is
// what AppendString writes.
func TestEveryFormDecodesToWhatWasAppended(t *testing.T) {
	for _, n := range []int{0, 31, 32, 255, 256, 65535, 65536} {
		s := strings.Repeat("x", n)
		b := AppendString(nil, s)
		if len(b) != StringSize(n) {
			t.Errorf("string of %d: %d bytes, StringSize %d", n, len(b), StringSize(n))
		}
		if !bytes.Equal(b, AppendStringBytes(nil, []byte(s))) {
			t.Errorf("string of %d: AppendStringBytes differs", n)
		}
		var got string
		if err := msgpack.Unmarshal(b, &got); err != nil || got != s {
			t.Errorf("string of %d: %v", n, err)
		}
		bin := append(AppendBinLen(nil, n), s...)
		var data []byte
		if err := msgpack.Unmarshal(bin, &data); err != nil || string(data) != s {
			t.Errorf("bin of %d: %v", n, err)
		}
		arr := AppendArrayLen(nil, n)
		m := AppendMapLen(nil, n)
		for i := range n {
			arr = AppendBool(arr, i%2 == 0)
			m = AppendNil(AppendUint64(m, uint64(i)))
		}
		var items []bool
		if err := msgpack.Unmarshal(arr, &items); err != nil || len(items) != n || (n > 1 && (!items[0] || items[1])) {
			t.Errorf("array of %d: %d items, %v", n, len(items), err)
		}
		var pairs map[uint64]any
		if err := msgpack.Unmarshal(m, &pairs); err != nil || len(pairs) != n {
			t.Errorf("map of %d: %d pairs, %v", n, len(pairs), err)
		}
	}
	for _, v := range []int64{0, -1, 1 << 40, -1 << 62} {
		b := AppendInt64(nil, v)
		var got int64
		if err := msgpack.Unmarshal(b, &got); err != nil || got != v || len(b) != IntSize {
			t.Errorf("int %d: %d (%d bytes), %v", v, got, len(b), err)
		}
		u := AppendUint64(nil, uint64(v))
		var gotU uint64
		if err := msgpack.Unmarshal(u, &gotU); err != nil || gotU != uint64(v) || len(u) != IntSize {
			t.Errorf("uint %d: %d, %v", uint64(v), gotU, err)
		}
	}
	null := []byte("not nil")
	if err := msgpack.Unmarshal(AppendNil(nil), &null); err != nil || null != nil {
		t.Errorf("nil: %q, %v", null, err)
	}
}
