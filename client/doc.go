// Package client is voik's Go client: the request/reply API of
// docs/protocol.md over a NATS connection, with a reader that keeps
// several FETCH pages in flight (ReadRange) and a decoder of FETCH replies
// that reads a megabyte page without reflection. The request and reply
// types are the wire types of package messages; this package knows
// nothing of voik's storage or service.
//
//	nc, _ := nats.Connect(nats.DefaultURL)
//	c := client.New(nc, "VOIK.API")
//	page, err := c.Fetch(ctx, "orders.eu", messages.FetchRequest{MaxMessages: 10})
package client
