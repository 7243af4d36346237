package messages

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// intMarkers walks a MessagePack value and returns, for every integer in
// it, the map key it sits under and its type byte. It knows the codes
// replies use; anything else fails the test.
func intMarkers(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	found := map[string][]byte{}
	rest, err := walkValue(b, "", found)
	if err != nil {
		t.Fatalf("walk % x: %v", b, err)
	}
	if len(rest) != 0 {
		t.Fatalf("%d trailing bytes", len(rest))
	}
	return found
}

func walkValue(b []byte, key string, found map[string][]byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("ends early")
	}
	c := b[0]
	be := func(n int) int {
		switch n {
		case 1:
			return int(b[1])
		case 2:
			return int(binary.BigEndian.Uint16(b[1:]))
		}
		return int(binary.BigEndian.Uint32(b[1:]))
	}
	intAt := func(size int) ([]byte, error) {
		found[key] = append(found[key], c)
		return b[1+size:], nil
	}
	switch {
	case c <= 0x7f || c >= 0xe0:
		return intAt(0)
	case c == 0xc2 || c == 0xc3 || c == 0xc0: // false, true, nil
		return b[1:], nil
	case c >= 0xcc && c <= 0xcf:
		return intAt(1 << (c - 0xcc))
	case c >= 0xd0 && c <= 0xd3:
		return intAt(1 << (c - 0xd0))
	case c&0xe0 == 0xa0:
		return b[1+int(c&0x1f):], nil
	case c == 0xd9 || c == 0xc4:
		return b[2+be(1):], nil
	case c == 0xda || c == 0xc5:
		return b[3+be(2):], nil
	case c == 0xdb || c == 0xc6:
		return b[5+be(4):], nil
	case c&0xf0 == 0x90 || c == 0xdc || c == 0xdd:
		n, head := containerLen(c, 0xdc, be)
		b = b[head:]
		for i := 0; i < n; i++ {
			var err error
			if b, err = walkValue(b, key+"[]", found); err != nil {
				return nil, err
			}
		}
		return b, nil
	case c&0xf0 == 0x80 || c == 0xde || c == 0xdf:
		n, head := containerLen(c, 0xde, be)
		b = b[head:]
		for i := 0; i < n; i++ {
			if len(b) == 0 || !isStringCode(b[0]) {
				return nil, fmt.Errorf("map key is not a string")
			}
			name, after := stringAt(b)
			var err error
			if b, err = walkValue(after, name, found); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	return nil, fmt.Errorf("code %#x", c)
}

// containerLen is the length of an array or map whose 16-bit form is
// code16 (the 32-bit one follows it), and the size of its head.
func containerLen(c, code16 byte, be func(int) int) (n, head int) {
	switch c {
	case code16:
		return be(2), 3
	case code16 + 1:
		return be(4), 5
	}
	return int(c & 0x0f), 1
}

func stringAt(b []byte) (string, []byte) {
	c := b[0]
	switch {
	case c&0xe0 == 0xa0:
		n := int(c & 0x1f)
		return string(b[1 : 1+n]), b[1+n:]
	case c == 0xd9:
		n := int(b[1])
		return string(b[2 : 2+n]), b[2+n:]
	case c == 0xda:
		n := int(binary.BigEndian.Uint16(b[1:]))
		return string(b[3 : 3+n]), b[3+n:]
	}
	n := int(binary.BigEndian.Uint32(b[1:]))
	return string(b[5 : 5+n]), b[5+n:]
}

// TestEveryIntegerOfEveryReplyHasTheContractsFixedWidth: timestamps are
// int 64 (0xd3), every other integer uint 64 (0xcf), whatever its value,
// so that a client decodes each field to one type (in JavaScript with
// useBigInt64, always a BigInt: small offsets used to come out as Numbers).
func TestEveryIntegerOfEveryReplyHasTheContractsFixedWidth(t *testing.T) {
	var b FetchReplyBuilder
	b.Add(0, 1, nil, []byte("a"))
	b.Add(5, 1<<62, map[string][]string{"H": {"v"}}, nil)
	b.Add(1<<40, -3, nil, []byte("c"))
	replies := map[string][]byte{
		"FETCH":          b.Finish("orders.eu", 0, 0, 3),
		"FETCH, empty":   new(FetchReplyBuilder).Finish("x", 7, 7, 7),
		"ack":            AppendAckReply(nil, "orders.eu", 0, 12, false),
		"ack, duplicate": AppendAckReply(nil, "orders.eu", 3, 12, true),
		"ack, large":     AppendAckReply(nil, "orders.eu", 1<<63, -1, false),
		"INFO":           Encode(InfoReply{Subject: "a", FirstOffset: 0, EndOffset: 3, Messages: 3, Bytes: 10, FirstTs: 1, LastTs: 2, Segments: 1}),
		"INFO, empty":    Encode(InfoReply{Subject: "a"}),
		"SUBJECTS":       Encode(SubjectsReply{Subjects: []string{"a"}, Total: 1}),
		"REPLAY":         Encode(ReplayReply{Subject: "a", FirstOffset: 0, EndOffset: 2, Deliver: "_INBOX.x"}),
		"GROUP": Encode(GroupReply{Group: "g", Leader: "a", Epoch: 7, Replicas: 3,
			Members: []GroupMember{{Instance: "a", Role: "leader", InSync: true}, {Instance: "b", Role: "follower", Lag: 2}}}),
		"error":          EncodeError(Errorf(CodeNotFound, "no log")),
		"error, wrapped": Encode(ErrorReply{Error: Errorf(CodeOutOfRange, "x")}),
	}
	timestamps := map[string]bool{"ts": true, "first_ts": true, "last_ts": true}
	for name, body := range replies {
		markers := intMarkers(t, body)
		if len(markers) == 0 {
			t.Errorf("%s: no integers found in % x", name, body)
		}
		for key, codes := range markers {
			want := byte(0xcf)
			if timestamps[key] {
				want = 0xd3
			}
			for _, c := range codes {
				if c != want {
					t.Errorf("%s: %s encoded with %#x, want %#x", name, key, c, want)
				}
			}
		}
	}
}
