// Read a subject's whole log from voik, two records a request, and print it.
// docs/protocol.md quotes this file; e2e/interop_node_test.go runs it.
import { connect } from "nats";
import { encode, decode } from "@msgpack/msgpack";

const nc = await connect({ servers: process.env.NATS_URL ?? "127.0.0.1:4222" });
const fetchSubject = `${process.env.VOIK_API_PREFIX ?? "VOIK.API"}.FETCH.${process.argv[2]}`;
const bigints = { useBigInt64: true }; // MessagePack's 64-bit integers <-> BigInt, both ways
let offset = null; // nil: start at the log's first_offset, wherever retention left it
for (;;) {
  const reply = await nc.request(fetchSubject, encode({ offset, max_messages: 2 }, bigints), { timeout: 5000 });
  const page = decode(reply.data, bigints);
  if (page.error) throw new Error(`voik ${page.error.code}: ${page.error.description}`);
  for (const r of page.records) {
    const when = new Date(Number(r.ts / 1_000_000n)).toISOString(); // ts: Unix nanoseconds, beyond 2^53
    console.log(`${r.offset} ${when} ${new TextDecoder().decode(r.data)}`);
  }
  if (page.next_offset >= page.end_offset) break;
  offset = page.next_offset; // a BigInt, sent back as an integer
}
await nc.close();
