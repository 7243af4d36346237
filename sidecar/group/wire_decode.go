package group

import (
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/internal/msgp"
)

// A follower's hot path: a pull reply decoded without reflection, its
// records' data left where they arrived (the reply's body, which the
// follower owns and keeps until the batch is applied) rather than copied
// into a slice each, and a batch's repeated subject decoded once. What
// it does not know (a snapshot's fields, a divergence, the epochs, any
// form it does not expect) it leaves to MessagePack's decoder, which
// then decodes the whole body: the two always agree on what they both
// take (FuzzDecodePullReply).

// decodePullReply decodes body into reply. Data of its records points
// into body.
func decodePullReply(body []byte, reply *PullReply) error {
	var fast PullReply
	if decodeHot(body, &fast) == nil {
		*reply = fast
		return nil
	}
	*reply = PullReply{}
	return msgpack.Unmarshal(body, reply)
}

// decodeHot decodes a batch's reply, or fails with msgp.ErrUnexpected.
func decodeHot(body []byte, reply *PullReply) error {
	r := msgp.NewReader(body)
	n := r.MapLen()
	for i := 0; i < n && r.Err() == nil; i++ {
		switch string(r.Str()) {
		case "v":
			reply.Version = r.Int()
		case "code":
			reply.Code = r.Int()
		case "error":
			reply.Error = string(r.Str())
		case "epoch":
			reply.Epoch = r.Uint64()
		case "committed":
			reply.Committed = r.Uint64()
		case "in_sync":
			reply.InSync = r.Bool()
		case "end":
			reply.End = r.Uint64()
		case "records":
			reply.Records = records(r)
		default:
			r.Fail()
		}
	}
	if r.Err() == nil && r.Left() != 0 {
		r.Fail() // something after the map: msgpack's decoder says what
	}
	return r.Err()
}

// records decodes an array of WireRecords, or nil.
func records(r *msgp.Reader) []WireRecord {
	if r.Nil() {
		return nil
	}
	n := r.ArrayLen()
	if r.Err() != nil || n > r.Left() { // each record takes a byte at least
		r.Fail()
		return nil
	}
	records := make([]WireRecord, n)
	var subject []byte
	var subjectString string
	for k := range records {
		w := &records[k]
		fields := r.MapLen()
		for i := 0; i < fields && r.Err() == nil; i++ {
			switch string(r.Str()) {
			case keyJournal:
				w.Journal = r.Uint64()
			case keyJournaled:
				w.Journaled = r.Int64()
			case keySubject:
				if s := r.Str(); subject == nil || string(s) != string(subject) {
					subject, subjectString = s, string(s)
				}
				w.Subject = subjectString
			case keyOffset:
				w.Offset = r.Uint64()
			case keyTimestamp:
				w.Timestamp = r.Int64()
			case keyHeaders:
				w.Headers = r.Headers()
			case keyData:
				if !r.Nil() {
					w.Data = r.Bin()
				}
			case "c":
				w.Chunk = r.Int()
			case "n":
				w.Chunks = r.Int()
			case keyDrop:
				w.Drop = r.Uint64()
			case keyStart:
				w.Start = r.Bool()
			default:
				r.Fail()
			}
		}
		if r.Err() != nil {
			return nil
		}
	}
	return records
}
