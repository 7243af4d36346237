// Package client is voik's Go client: the request/reply API of
// docs/protocol.md over a NATS connection, with a reader that keeps
// several FETCH pages in flight (ReadRange) and a decoder of FETCH replies
// that reads a megabyte page without reflection. The request and reply
// types are the wire types of package messages; this package knows
// nothing of voik's storage or service.
//
// Reads (Fetch, Info, Subjects, and so ReadRange) change nothing, so a
// read that gets no answer within Client.AttemptTimeout, or a 503, is
// sent again within its context: NATS delivers a request at most once,
// and a replication group's members come and go from the API's queue
// group. Append and replays are sent once. AppendUntilAcked sends an
// append under a Nats-Msg-Id, and again with the same id until it is
// acked: voik stores the id once, so a publisher loses nothing across a
// group's failover and stores nothing twice.
//
//	nc, _ := nats.Connect(nats.DefaultURL)
//	c := client.New(nc, "VOIK.API")
//	page, err := c.Fetch(ctx, "orders.eu", messages.FetchRequest{MaxMessages: 10})
package client
