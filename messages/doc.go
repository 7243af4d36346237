// Package messages holds voik's wire types, the MessagePack bodies of
// docs/protocol.md, their strict decoding (every 400 case), NATS
// subject rules and the rule of what is never stored. It knows nothing
// of storage; the Go client built on these types is package client.
//
// Requests are decoded field by field rather than by reflection, so that a
// field of the wrong type, a negative unsigned value or a body that is not
// a map is told apart and answered with a 400 that says which, and so that
// no length in a hostile body is allocated before it is bounded by the
// bytes that are really there.
package messages
