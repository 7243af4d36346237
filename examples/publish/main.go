// Command publish is the "few lines of Go" of the README walk-through: it
// publishes messages to NATS the way any existing publisher does, and with
// -ack asks voik to confirm that each is on disk.
//
//	go run ./examples/publish orders.eu 'first order'
//	go run ./examples/publish -n 3 -H Source:web orders.eu 'order'
//	go run ./examples/publish -ack orders.eu 'an order that must not be lost'
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
)

type headerFlags nats.Header

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok {
		return fmt.Errorf("header %q: want Name:value", v)
	}
	nats.Header(h).Add(strings.TrimSpace(name), strings.TrimSpace(value))
	return nil
}

func main() {
	defaultURL := nats.DefaultURL
	if env := os.Getenv("NATS_URL"); env != "" { // as the nats CLI does
		defaultURL = env
	}
	url := flag.String("url", defaultURL, "NATS server (default: $NATS_URL, else "+nats.DefaultURL+")")
	count := flag.Int("n", 1, "how many messages to publish")
	ack := flag.Bool("ack", false, "ask voik to acknowledge each message once it is durable (header Voik-Ack)")
	headers := headerFlags{}
	flag.Var(headers, "H", "header Name:value (repeatable)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: publish [-url URL] [-n N] [-ack] [-H Name:value]... SUBJECT DATA")
		os.Exit(2)
	}
	subject, data := flag.Arg(0), flag.Arg(1)

	nc, err := nats.Connect(*url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "publish:", err)
		os.Exit(1)
	}
	defer nc.Close()
	for i := 0; i < *count; i++ {
		msg := &nats.Msg{Subject: subject, Data: []byte(data), Header: nats.Header(headers)}
		if !*ack {
			if err := nc.PublishMsg(msg); err != nil {
				fmt.Fprintln(os.Stderr, "publish:", err)
				os.Exit(1)
			}
			continue
		}
		msg.Header.Set("Voik-Ack", "1")
		reply, err := nc.RequestMsg(msg, 5*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "publish: no ack:", err)
			os.Exit(1)
		}
		var ackReply map[string]any
		if err := msgpack.Unmarshal(reply.Data, &ackReply); err != nil {
			fmt.Fprintln(os.Stderr, "publish: bad ack:", err)
			os.Exit(1)
		}
		fmt.Println(ackReply) // {subject, offset, ts}, or {error: {code, description}}
	}
	if err := nc.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "publish:", err)
		os.Exit(1)
	}
}
