package messages

import (
	"fmt"
	"strconv"
)

// Error codes of the wire contract (PROTOCOL.md section 3).
const (
	CodeBadRequest  = 400 // not a map, wrong type, out of range, invalid subject
	CodeNotFound    = 404 // the subject has no log
	CodeTooLarge    = 413 // the record cannot fit in one reply under max_payload
	CodeOutOfRange  = 416 // offset below first_offset or above end_offset
	CodeInternal    = 500 // an internal or I/O error
	CodeUnavailable = 503 // shutting down, or disk full for an ack
)

// Error is the body of every error reply: {error: {code, description}}. It
// is also the Go error the client returns for one.
type Error struct {
	Code        int    `msgpack:"code"`
	Description string `msgpack:"description"`
}

// Error reads as the code, a short phrase for it and the description,
// "416 out of range: offset 9 is above end_offset 4", so that it reads
// well after whatever names the program ("voik fetch: 416 out of range: …").
func (e *Error) Error() string {
	status := strconv.Itoa(e.Code)
	if phrase := codePhrase(e.Code); phrase != "" {
		status += " " + phrase
	}
	if e.Description == "" {
		return status
	}
	return status + ": " + e.Description
}

// codePhrase is a few words for each code of the contract, "" for others.
func codePhrase(code int) string {
	switch code {
	case CodeBadRequest:
		return "bad request"
	case CodeNotFound:
		return "not found"
	case CodeTooLarge:
		return "too large"
	case CodeOutOfRange:
		return "out of range"
	case CodeInternal:
		return "internal error"
	case CodeUnavailable:
		return "unavailable"
	}
	return ""
}

// Errorf makes an *Error.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// ErrorReply is the wire shape of an error reply.
type ErrorReply struct {
	Error *Error `msgpack:"error"`
}

// quoteLimit bounds how much of a client's string an error description
// repeats, so that an error reply always fits under max_payload.
const quoteLimit = 128

// Quote quotes a string from a request for an error description, cut to
// its first quoteLimit bytes (and its length) when it is longer.
func Quote(s string) string {
	if len(s) <= quoteLimit {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:quoteLimit]), len(s))
}
