package client

import (
	"errors"

	"github.com/voik/voik/internal/msgp"
	"github.com/voik/voik/messages"
)

// A FETCH reply can be a megabyte of records. decodeFetchReply reads the
// shape voik writes without reflection, and without copying record data:
// each messages.Record.Data points into the reply body, which the client owns. A
// body it does not expect (a key it does not know, an unusual type) makes
// it give up with errNotFast, and the caller decodes it the general way.

var errNotFast = errors.New("messages: reply needs the general decoder")

func record(r *msgp.Reader, rec *messages.Record) {
	n := r.MapLen()
	for i := 0; i < n && r.Err() == nil; i++ {
		switch string(r.Str()) {
		case "offset":
			rec.Offset = r.Uint64()
		case "ts":
			rec.Timestamp = r.Int64()
		case "headers":
			rec.Headers = r.Headers()
		case "data":
			rec.Data = r.Bin()
		default:
			r.Fail()
		}
	}
}

// decodeFetchReply decodes body into reply, or returns errNotFast.
func decodeFetchReply(body []byte, reply *messages.FetchReply) error {
	r := msgp.NewReader(body)
	n := r.MapLen()
	for i := 0; i < n && r.Err() == nil; i++ {
		switch string(r.Str()) {
		case "subject":
			reply.Subject = string(r.Str())
		case "records":
			count := r.ArrayLen()
			if r.Err() != nil || count > r.Left() {
				r.Fail()
				break
			}
			reply.Records = make([]messages.Record, count)
			for j := range reply.Records {
				record(r, &reply.Records[j])
			}
		case "next_offset":
			reply.NextOffset = r.Uint64()
		case "first_offset":
			reply.FirstOffset = r.Uint64()
		case "end_offset":
			reply.EndOffset = r.Uint64()
		default:
			r.Fail()
		}
	}
	if r.Err() == nil && r.Left() != 0 {
		r.Fail()
	}
	if r.Err() != nil {
		return errNotFast
	}
	return nil
}
