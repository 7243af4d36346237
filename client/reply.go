package client

import (
	"bytes"
	"errors"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/messages"
)

// errBadReply is wrapped by the client when a reply does not decode.
var errBadReply = errors.New("voik: reply is not a valid MessagePack map")

// errorReplyPrefix starts every error reply: a map of one, "error".
var errorReplyPrefix = []byte("\x81\xa5error")

// decodeReply unmarshals a reply into v, or returns the *messages.Error it
// carries.
func decodeReply(body []byte, v any) error {
	// An error reply is a map with the single key "error": tell it by its
	// first bytes, so that a large FETCH reply is decoded once, not twice.
	if bytes.HasPrefix(body, errorReplyPrefix) {
		var reply messages.ErrorReply
		if err := msgpack.Unmarshal(body, &reply); err != nil || reply.Error == nil {
			return errBadReply
		}
		return reply.Error
	}
	if fetch, ok := v.(*messages.FetchReply); ok {
		if decodeFetchReply(body, fetch) == nil {
			return nil
		}
		*fetch = messages.FetchReply{} // a shape the fast path does not know: decode it generally
	}
	if err := msgpack.Unmarshal(body, v); err != nil {
		return errBadReply
	}
	return nil
}
