// Drives voik from Node with nats.js and @msgpack/msgpack and checks the wire
// contract (docs/protocol.md) as a JavaScript client sees it. Run by
// e2e/interop_node_test.go against a fresh voik capturing "interop.>":
//
//   NATS_URL=nats://127.0.0.1:4222 VOIK_API_PREFIX=VOIK.API node interop.mjs
//
// Prints one line per check passed; on the first failed check prints
// "FAIL: ..." and exits 1.
import { connect, headers, createInbox, ErrorCode } from "nats";
import { encode, decode, Encoder, DecodeError } from "@msgpack/msgpack";

const NATS_URL = process.env.NATS_URL;
const PREFIX = process.env.VOIK_API_PREFIX;
if (!NATS_URL || !PREFIX) {
  console.error("FAIL: set NATS_URL and VOIK_API_PREFIX");
  process.exit(2);
}

// A watchdog: nothing here should take long; a hang is a failure.
setTimeout(() => fail("timed out after 90s"), 90_000).unref();

const te = new TextEncoder();
const td = new TextDecoder();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class CheckError extends Error {}
function fail(msg) {
  throw new CheckError(msg);
}
let passed = 0;
function ok(what) {
  passed++;
  console.log(`ok ${String(passed).padStart(2)} ${what}`);
}
function expect(cond, msg) {
  if (!cond) fail(msg);
}
function show(v) {
  return JSON.stringify(v, (_, x) =>
    typeof x === "bigint" ? `${x}n` : x instanceof Uint8Array ? `bin(${td.decode(x)})` : x,
  );
}
function eq(got, want, what) {
  if (show(got) !== show(want)) fail(`${what}: got ${show(got)}, want ${show(want)}`);
}

// ---- raw MessagePack walker ----------------------------------------------
//
// Reads one MessagePack value from bytes, and for every integer and float
// records where it is (the nearest map key) and its type byte. Maps come out
// as Map (so any key, __proto__ included, is just a key), ints as BigInt,
// str as string, bin as Uint8Array.
function walk(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const numbers = []; // {path, key, code}
  let p = 0;
  const take = (n) => {
    if (p + n > bytes.length) fail(`MessagePack truncated at byte ${p}`);
    const at = p;
    p += n;
    return at;
  };
  const u8 = () => bytes[take(1)];
  const u16 = () => dv.getUint16(take(2));
  const u32 = () => dv.getUint32(take(4));
  const str = (n) => td.decode(bytes.subarray(take(n), p));
  const bin = (n) => bytes.slice(take(n), p);
  const num = (path, key, code, v) => {
    numbers.push({ path, key, code, value: v });
    return v;
  };
  function value(path, key) {
    const c = u8();
    if (c <= 0x7f) return num(path, key, c, BigInt(c));
    if (c >= 0xe0) return num(path, key, c, BigInt(c - 0x100));
    if ((c & 0xf0) === 0x80) return map(c & 0x0f, path);
    if ((c & 0xf0) === 0x90) return array(c & 0x0f, path, key);
    if ((c & 0xe0) === 0xa0) return str(c & 0x1f);
    switch (c) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xca: return num(path, key, c, dv.getFloat32(take(4)));
      case 0xcb: return num(path, key, c, dv.getFloat64(take(8)));
      case 0xcc: return num(path, key, c, BigInt(u8()));
      case 0xcd: return num(path, key, c, BigInt(u16()));
      case 0xce: return num(path, key, c, BigInt(u32()));
      case 0xcf: return num(path, key, c, dv.getBigUint64(take(8)));
      case 0xd0: return num(path, key, c, BigInt(dv.getInt8(take(1))));
      case 0xd1: return num(path, key, c, BigInt(dv.getInt16(take(2))));
      case 0xd2: return num(path, key, c, BigInt(dv.getInt32(take(4))));
      case 0xd3: return num(path, key, c, dv.getBigInt64(take(8)));
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return array(u16(), path, key);
      case 0xdd: return array(u32(), path, key);
      case 0xde: return map(u16(), path);
      case 0xdf: return map(u32(), path);
    }
    fail(`${path}: unexpected MessagePack type 0x${c.toString(16)} at byte ${p - 1}`);
  }
  function map(n, path) {
    const m = new Map();
    for (let i = 0; i < n; i++) {
      const k = value(`${path}{key}`, null);
      if (typeof k !== "string") fail(`${path}: a map key that is not a str: ${show(k)}`);
      m.set(k, value(`${path}.${k}`, k));
    }
    return m;
  }
  function array(n, path, key) {
    const a = [];
    for (let i = 0; i < n; i++) a.push(value(`${path}[${i}]`, key));
    return a;
  }
  const v = value("", null);
  if (p !== bytes.length) fail(`${bytes.length - p} bytes after the MessagePack value`);
  return { value: v, numbers };
}

// The contract's reply widths: timestamps int 64, every other integer
// (offsets, counts, error codes) uint 64, and no floats.
const TIMESTAMPS = new Set(["ts", "first_ts", "last_ts"]);
let widthChecked = 0;
let intsChecked = 0;
function checkWidths(raw, what) {
  const { value, numbers } = walk(raw);
  if (!(value instanceof Map)) fail(`${what}: the reply is not a map`);
  for (const n of numbers) {
    const want = TIMESTAMPS.has(n.key) ? 0xd3 : 0xcf;
    if (n.code !== want) {
      fail(`${what}: ${n.path} = ${n.value} is encoded 0x${n.code.toString(16)}, want 0x${want.toString(16)}`);
    }
  }
  widthChecked++;
  intsChecked += numbers.length;
  return value;
}

// Every integer of a reply must decode to BigInt: a Number anywhere means a
// width the decoder does not map to BigInt.
function checkBigInts(v, what, path = "") {
  if (typeof v === "number") fail(`${what}: ${path} decoded to the Number ${v}, want a BigInt`);
  if (v instanceof Uint8Array || v === null || typeof v !== "object") return;
  for (const [k, x] of Object.entries(v)) checkBigInts(x, what, Array.isArray(v) ? `${path}[${k}]` : `${path}.${k}`);
}

// reply checks a reply's raw bytes, then decodes it with BigInt.
function reply(raw, what) {
  checkWidths(raw, what);
  const v = decode(raw, { useBigInt64: true });
  checkBigInts(v, what);
  return v;
}

// ---- requests -------------------------------------------------------------

const nc = await connect({ servers: NATS_URL, name: "voik-interop-node" });

// enc writes BigInts as 64-bit integers, so offsets from replies go back as they came.
const enc = (o) => encode(o, { useBigInt64: true });
// encFloat writes every number, whole or not, as a float 64.
const floatEncoder = new Encoder({ forceIntegerToFloat: true });
const encFloat = (o) => floatEncoder.encode(o);

// floatIn checks that the request body holds key as a float 64 (0xcb).
function floatIn(body, key) {
  const n = walk(body).numbers.find((x) => x.key === key);
  expect(n && n.code === 0xcb, `request ${key} is not a float 64: ${n ? "0x" + n.code.toString(16) : "absent"}`);
}

async function call(verbSubject, body = new Uint8Array(), timeout = 5000) {
  const msg = await nc.request(`${PREFIX}.${verbSubject}`, body, { timeout });
  return reply(msg.data, verbSubject);
}
function success(v, what) {
  expect(!("error" in v), `${what}: error reply ${show(v)}`);
  return v;
}
function isError(v, code, what) {
  expect(v.error && typeof v.error === "object", `${what}: want an error ${code}, got ${show(v)}`);
  eq(Object.keys(v).sort(), ["error"], `${what}: error reply keys`);
  eq(Object.keys(v.error).sort(), ["code", "description"], `${what}: error keys`);
  eq(v.error.code, BigInt(code), `${what}: error code`);
  expect(typeof v.error.description === "string" && v.error.description.length > 0, `${what}: empty description`);
  return v.error;
}

// appendAcked publishes data with Voik-Ack and the extra headers ([name, value]
// pairs: an object literal cannot hold the key __proto__) and returns the ack.
async function appendAcked(subject, data, extra = []) {
  const h = headers();
  h.set("Voik-Ack", "1");
  for (const [k, v] of extra) h.set(k, v);
  const msg = await nc.request(subject, te.encode(data), { headers: h, timeout: 5000 });
  const ack = success(reply(msg.data, `ack on ${subject}`), `ack on ${subject}`);
  eq(Object.keys(ack).sort(), ["offset", "subject", "ts"], `ack keys on ${subject}`);
  eq(ack.subject, subject, "ack subject");
  return ack;
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n;
const sizeOf = (r) =>
  r.data.length +
  Object.entries(r.headers ?? {}).reduce(
    (n, [name, values]) => n + te.encode(name).length + values.reduce((m, v) => m + te.encode(v).length, 0),
    0,
  );

async function main() {
  const S = "interop.orders";

  // -- acknowledged appends --------------------------------------------------
  const acks = [];
  for (let i = 0; i < 3; i++) acks.push(await appendAcked(S, `order ${i}`, [["Source", "web"]]));
  eq(acks.map((a) => a.offset), [0n, 1n, 2n], "ack offsets");
  for (const a of acks) {
    const skew = a.ts - nowNs();
    expect(skew < 60_000_000_000n && skew > -60_000_000_000n, `ack ts ${a.ts} is not now`);
  }
  expect(acks[0].ts <= acks[1].ts && acks[1].ts <= acks[2].ts, "ack timestamps go down");
  ok("acked append (Voik-Ack + request): {subject, offset, ts} for offsets 0, 1, 2; ts is BigInt Unix ns of now");

  // -- a lowercase voik-ack header is not Voik-Ack -----------------------------
  {
    const h = headers();
    h.set("voik-ack", "1");
    expect(h.keys().includes("voik-ack"), `nats.js changed the header name: ${h.keys()}`);
    const t0 = Date.now();
    let err = null;
    try {
      const m = await nc.request(S, te.encode("lowercase"), { headers: h, timeout: 500 });
      fail(`lowercase voik-ack got a reply: ${show(decode(m.data))}`);
    } catch (e) {
      if (e instanceof CheckError) throw e;
      err = e;
    }
    expect(err.code === ErrorCode.Timeout, `lowercase voik-ack: want a timeout, got ${err.code}: ${err.message}`);
    const waited = Date.now() - t0;
    expect(waited < 2000, `lowercase voik-ack: the timeout took ${waited} ms`);
    ok(`lowercase "voik-ack" header: no ack, request timed out after ${waited} ms (500 ms asked)`);

    const page = success(await call(`FETCH.${S}`, enc({ offset: 3n, max_messages: 1, wait_ms: 2000 })), "FETCH 3");
    eq(page.records.length, 1, "records at offset 3");
    const r = page.records[0];
    eq([r.offset, td.decode(r.data), r.headers], [3n, "lowercase", { "voik-ack": ["1"] }], "the lowercase record");
    ok('...but it is captured: FETCH offset 3 has it, header stored as "voik-ack"');
  }

  // -- FETCH by offset ---------------------------------------------------------
  const page = success(await call(`FETCH.${S}`, enc({ offset: 1, max_messages: 2 })), "FETCH offset 1");
  eq(Object.keys(page).sort(), ["end_offset", "first_offset", "next_offset", "records", "subject"], "FETCH keys");
  eq(
    [page.subject, page.next_offset, page.first_offset, page.end_offset],
    [S, 3n, 0n, 4n],
    "FETCH subject, next_offset, first_offset, end_offset",
  );
  eq(
    page.records.map((r) => [r.offset, r.ts, td.decode(r.data), r.headers]),
    [1, 2].map((i) => [BigInt(i), acks[i].ts, `order ${i}`, { Source: ["web"], "Voik-Ack": ["1"] }]),
    "FETCH records",
  );
  expect(page.records.every((r) => r.data instanceof Uint8Array), "record data is not bin");
  ok("FETCH by offset: offset 1, max_messages 2 -> records 1, 2 (ts = the acks' ts, headers, data as bin), next 3, end 4");

  // -- FETCH by start_time -----------------------------------------------------
  {
    const want = acks.findIndex((a) => a.ts >= acks[2].ts);
    const p = success(await call(`FETCH.${S}`, enc({ start_time: acks[2].ts, max_messages: 1 })), "FETCH start_time");
    eq(p.records.map((r) => r.offset), [BigInt(want)], "FETCH by start_time");
    ok(`FETCH by start_time (a BigInt ts from an ack, sent as int 64): starts at offset ${want}`);
  }

  // -- INFO ---------------------------------------------------------------------
  {
    const all = success(await call(`FETCH.${S}`, enc({})), "FETCH all");
    const info = success(await call(`INFO.${S}`), `INFO ${S}`);
    eq(
      Object.keys(info).sort(),
      ["bytes", "end_offset", "first_offset", "first_ts", "last_ts", "messages", "segments", "subject"],
      "INFO keys",
    );
    eq(
      [info.subject, info.first_offset, info.end_offset, info.messages],
      [S, 0n, 4n, 4n],
      "INFO subject, first_offset, end_offset, messages",
    );
    eq(info.bytes, BigInt(all.records.reduce((n, r) => n + sizeOf(r), 0)), "INFO bytes (data + header names + values)");
    eq([info.first_ts, info.last_ts], [all.records[0].ts, all.records[3].ts], "INFO first_ts, last_ts");
    expect(info.segments >= 1n, `INFO segments ${info.segments}`);
    // One type for every integer field: BigInt arithmetic across replies just works.
    eq(info.end_offset - page.next_offset, 1n, "info.end_offset - page.next_offset");
    ok("INFO: offsets, messages, bytes = sum of record sizes, first_ts/last_ts = records' ts; info.end_offset - page.next_offset === 1n");
  }

  // -- FETCH long poll woken by a publish ---------------------------------------
  {
    const W = "interop.wait";
    await appendAcked(W, "first");
    const t0 = Date.now();
    const pending = call(`FETCH.${W}`, enc({ offset: 1n, wait_ms: 10_000 }), 15_000);
    await sleep(300);
    nc.publish(W, te.encode("wake"));
    const p = success(await pending, "FETCH long poll");
    const took = Date.now() - t0;
    eq(p.records.map((r) => [r.offset, td.decode(r.data)]), [[1n, "wake"]], "long poll records");
    expect(took >= 250 && took < 5000, `long poll answered after ${took} ms (publish at 300 ms, wait_ms 10000)`);
    ok(`FETCH long poll (wait_ms 10000 at end_offset): woken by a publish, answered after ${took} ms`);
  }

  // -- SUBJECTS -----------------------------------------------------------------
  {
    const names = ["a", "b", "c", "d", "e"].map((x) => `interop.list.${x}`);
    for (const n of names) await appendAcked(n, n);
    const page1 = success(await call("SUBJECTS", enc({ filter: "interop.list.*", offset: 1, limit: 2 })), "SUBJECTS 1");
    eq(Object.keys(page1).sort(), ["subjects", "total"], "SUBJECTS keys");
    eq([page1.subjects, page1.total], [names.slice(1, 3), 5n], "SUBJECTS offset 1 limit 2");
    const page2 = success(
      await call("SUBJECTS", enc({ filter: "interop.list.*", offset: 1n + BigInt(page1.subjects.length), limit: 2 })),
      "SUBJECTS 2",
    );
    eq([page2.subjects, page2.total], [names.slice(3, 5), 5n], "SUBJECTS offset 3 limit 2");
    const page3 = success(await call("SUBJECTS", enc({ filter: "interop.list.*", offset: 5, limit: 2 })), "SUBJECTS 3");
    eq([page3.subjects, page3.total], [[], 5n], "SUBJECTS offset 5");
    const everything = success(await call("SUBJECTS"), "SUBJECTS all");
    const sorted = [...everything.subjects].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    eq(everything.subjects, sorted, "SUBJECTS order");
    expect([S, "interop.wait", ...names].every((n) => everything.subjects.includes(n)), "SUBJECTS misses a subject");
    eq(everything.total, BigInt(everything.subjects.length), "SUBJECTS total");
    ok("SUBJECTS: filter interop.list.* paged by offset/limit -> [b c] [d e] [], total 5n; empty body lists all, sorted");
  }

  // -- REPLAY ---------------------------------------------------------------------
  {
    const all = success(await call(`FETCH.${S}`, enc({})), "FETCH all");
    const inbox = createInbox();
    const sub = nc.subscribe(inbox);
    await nc.flush();
    const r = success(await call(`REPLAY.${S}`, enc({ deliver: inbox, offset: 1 })), "REPLAY");
    eq(Object.keys(r).sort(), ["deliver", "end_offset", "first_offset", "subject"], "REPLAY keys");
    eq([r.subject, r.first_offset, r.end_offset, r.deliver], [S, 1n, 4n, inbox], "REPLAY reply");
    const got = [];
    const timer = setTimeout(() => sub.unsubscribe(), 10_000);
    for await (const m of sub) {
      got.push(m);
      if (m.headers?.has("Voik-Status")) break;
    }
    clearTimeout(timer);
    sub.unsubscribe();
    expect(got.length === 4, `REPLAY delivered ${got.length} messages, want 3 records and the end marker`);
    for (let i = 0; i < 3; i++) {
      const m = got[i];
      const rec = all.records[i + 1];
      eq(
        [m.headers.get("Voik-Subject"), m.headers.get("Voik-Offset"), m.headers.get("Voik-Timestamp"), td.decode(m.data)],
        [S, String(rec.offset), String(rec.ts), td.decode(rec.data)],
        `replayed record ${i + 1}`,
      );
      for (const [name, values] of Object.entries(rec.headers ?? {})) {
        eq(m.headers.values(name), values, `replayed record ${i + 1} header ${name}`);
      }
    }
    const end = got[3];
    eq([end.headers.get("Voik-Status"), end.headers.get("Voik-Offset"), end.data.length], ["end", "4", 0], "REPLAY end marker");
    ok("REPLAY to an inbox: 3 records with Voik-Subject/Voik-Offset/Voik-Timestamp (= FETCH ts) and original headers, then Voik-Status: end, Voik-Offset: 4");
  }

  // -- error replies ------------------------------------------------------------
  {
    isError(await call("INFO.interop.nothing"), 404, "INFO of a subject never stored");
    ok("404: INFO interop.nothing -> {error: {code: 404n, description}}, code uint 64");
    const e = isError(await call(`FETCH.${S}`, enc({ offset: 99 })), 416, "FETCH past end");
    expect(e.description.includes("4"), `416 description does not state end_offset 4: ${e.description}`);
    ok(`416: FETCH offset 99 -> {error: {code: 416n, description: ${JSON.stringify(e.description)}}}`);
  }

  // -- floats in requests -------------------------------------------------------
  {
    const F = "interop.floats";
    for (let i = 0; i < 29; i++) nc.publish(F, te.encode(`f${i}`));
    eq((await appendAcked(F, "f29")).offset, 29n, "offset of the 30th record");

    const body = encFloat({ offset: 100 / 4, max_messages: 1 });
    floatIn(body, "offset");
    const p = success(await call(`FETCH.${F}`, body), "FETCH offset 25.0");
    eq(p.records.map((r) => [r.offset, td.decode(r.data)]), [[25n, "f25"]], "FETCH offset 100/4");
    ok("float offset: {offset: 100/4} sent as float 64 25.0 -> record 25");

    await sleep(5);
    const t = Date.now() * 1e6; // a Number beyond 2^53: @msgpack/msgpack writes it as float 64
    await sleep(5);
    const after = await appendAcked(F, "after");
    const tb = encode({ start_time: t });
    floatIn(tb, "start_time");
    const q = success(await call(`FETCH.${F}`, tb), "FETCH start_time float");
    eq(q.records.map((r) => [r.offset, td.decode(r.data)]), [[after.offset, "after"]], "FETCH start_time Date.now()*1e6");
    ok(`float start_time: {start_time: Date.now()*1e6} sent as float 64 -> starts at the record published after it (${after.offset})`);

    for (const [label, v] of [["2.5", 2.5], ["NaN", NaN], ["Infinity", Infinity], ["-Infinity", -Infinity], ["-1.0", -1]]) {
      const b = encFloat({ offset: v });
      floatIn(b, "offset");
      const err = isError(await call(`FETCH.${F}`, b), 400, `FETCH offset ${label}`);
      ok(`float offset ${label} (float 64) -> 400: ${err.description}`);
    }
  }

  // -- a header named __proto__ -------------------------------------------------
  {
    const P = "interop.proto";
    const a0 = await appendAcked(P, "poisoned", [["__proto__", "polluted"]]);
    const a1 = await appendAcked(P, "clean");
    eq([a0.offset, a1.offset], [0n, 1n], "__proto__ subject offsets");
    const msg = await nc.request(`${PREFIX}.FETCH.${P}`, enc({}), { timeout: 5000 });
    const raw = checkWidths(msg.data, `FETCH ${P}`);
    const rec0 = raw.get("records")[0];
    eq([...rec0.get("headers").entries()], [["Voik-Ack", ["1"]], ["__proto__", ["polluted"]]], "raw headers of record 0");
    ok("header __proto__: published with nats.js, stored and sent by voik (seen by the raw walker)");

    for (const opts of [{ useBigInt64: true }, {}]) {
      let thrown = null;
      try {
        decode(msg.data, opts);
      } catch (e) {
        thrown = e;
      }
      expect(thrown !== null, `@msgpack/msgpack ${show(opts)} decoded a map with the key __proto__ (it used to throw)`);
      expect(
        thrown instanceof DecodeError && thrown.message === "The key __proto__ is not allowed",
        `@msgpack/msgpack ${show(opts)} failed differently: ${thrown}`,
      );
    }
    ok('@msgpack/msgpack decode() of that FETCH reply throws DecodeError "The key __proto__ is not allowed" (the whole reply)');

    const next = success(await call(`FETCH.${P}`, enc({ offset: 1n })), "FETCH after __proto__");
    eq(next.records.map((r) => [r.offset, td.decode(r.data)]), [[1n, "clean"]], "FETCH past the __proto__ record");
    const inbox = createInbox();
    const sub = nc.subscribe(inbox, { max: 2, timeout: 5000 });
    await nc.flush();
    success(await call(`REPLAY.${P}`, enc({ deliver: inbox, offset: 0, max_messages: 1 })), "REPLAY __proto__");
    const got = [];
    for await (const m of sub) got.push(m);
    eq(
      [got[0]?.headers?.get("__proto__"), td.decode(got[0]?.data ?? new Uint8Array()), got[1]?.headers?.get("Voik-Status")],
      ["polluted", "poisoned", "end"],
      "REPLAY of the __proto__ record",
    );
    ok("...a FETCH from offset 1 decodes; REPLAY delivers record 0 and nats.js reads its __proto__ header");
  }

  ok(`reply widths: ${widthChecked} replies, ${intsChecked} integers, each 0xcf (uint 64) or, for ts/first_ts/last_ts, 0xd3 (int 64)`);
  ok("BigInt: every integer of every reply decoded with useBigInt64 is a BigInt, none a Number");
}

try {
  await main();
  console.log(`PASS: ${passed} checks`);
  await nc.close();
} catch (e) {
  console.error(`FAIL: ${e instanceof CheckError ? e.message : e?.stack ?? e}`);
  process.exit(1);
}
