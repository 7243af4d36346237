package client

import (
	"errors"
	"testing"

	"github.com/voik/voik/messages"
)

// An error reply comes back from every call as the *messages.Error it
// carries, code and description intact, whatever reply was expected.
func TestErrorRepliesDecodeAsMessagesError(t *testing.T) {
	body := messages.EncodeError(messages.Errorf(messages.CodeOutOfRange, "offset 9 is out of range"))
	for _, into := range []any{&messages.InfoReply{}, &messages.FetchReply{}, &messages.AckReply{}} {
		err := decodeReply(body, into)
		var apiErr *messages.Error
		if !errors.As(err, &apiErr) || apiErr.Code != 416 || apiErr.Description != "offset 9 is out of range" {
			t.Errorf("into %T: %v", into, err)
		}
	}
	if err := decodeReply([]byte{0xc1}, &messages.InfoReply{}); !errors.Is(err, errBadReply) {
		t.Errorf("a body that is not MessagePack: %v, want errBadReply", err)
	}
}
