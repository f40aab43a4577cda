// Sluice guest SDK for JavaScript plugins built with jco / componentize-js.
//
// It hides the wire form of wit/WIRE.md: a plugin is a plain function over message objects
// { key, value, headers, timestampMs, origin, output } (key and value are Uint8Array, headers an
// array of [name, Uint8Array]).
//
//     import { transform, text, withValue } from "./sluice.js";
//     export const { init, process } = transform((msg) => withValue(msg, text(msg.value).toUpperCase()));
//
// Timestamps are numbers of milliseconds since the Unix epoch.
//
// A process function returns one message, an array of them (flat-map; [] = filtered out) or
// null/undefined (filtered out). Throwing fails that record alone: the runtime routes it by the
// pipeline's error policy (fail, skip or dead-letter).

const KEY = 1, TIMESTAMP = 2, ORIGIN = 4, OUTPUT = 8;
const KNOWN = KEY | TIMESTAMP | ORIGIN | OUTPUT;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The bytes of a value as text (UTF-8). */
export function text(bytes) {
  return decoder.decode(bytes);
}

/** A copy of `msg` with a new value (a string is UTF-8 encoded): key, headers and timestamp kept. */
export function withValue(msg, value) {
  return { ...msg, value: typeof value === "string" ? encoder.encode(value) : value, origin: undefined };
}

/** The first header called `name`, or undefined. */
export function header(msg, name) {
  const h = msg.headers.find(([n]) => n === name);
  return h && h[1];
}

class Reader {
  constructor(buf) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = 0;
  }
  fail(what) {
    throw new Error(`malformed wire buffer at byte ${this.pos}: ${what}`);
  }
  u32() {
    if (this.pos + 4 > this.buf.length) this.fail("length past the end");
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  bytes() {
    const n = this.u32();
    if (this.pos + n > this.buf.length) this.fail("length past the end");
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  text() {
    return decoder.decode(this.bytes());
  }
}

export function decodeBatch(buf) {
  const r = new Reader(buf);
  const out = [];
  for (let n = r.u32(); n > 0; n--) {
    const flags = r.u32();
    if (flags & ~KNOWN) r.fail(`unknown flags ${flags}`);
    const key = flags & KEY ? r.bytes() : undefined;
    const value = r.bytes();
    let timestampMs;
    if (flags & TIMESTAMP) {
      if (r.pos + 8 > buf.length) r.fail("length past the end");
      timestampMs = Number(r.view.getBigInt64(r.pos, true)); // ms since the epoch: exact below 2^53
      r.pos += 8;
    }
    const headers = [];
    for (let h = r.u32(); h > 0; h--) headers.push([r.text(), r.bytes()]);
    const origin = flags & ORIGIN ? r.text() : undefined;
    const output = flags & OUTPUT ? r.text() : undefined;
    out.push({ key, value, headers, timestampMs, origin, output });
  }
  if (r.pos !== buf.length) r.fail("trailing bytes");
  return out;
}

class Writer {
  constructor() {
    this.buf = new Uint8Array(1024);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }
  reserve(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const buf = new Uint8Array(size);
    buf.set(this.buf.subarray(0, this.pos));
    this.buf = buf;
    this.view = new DataView(buf.buffer);
  }
  u8(v) {
    this.reserve(1);
    this.buf[this.pos++] = v;
  }
  u32(v) {
    this.reserve(4);
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
  }
  i64(v) {
    this.reserve(8);
    this.view.setBigInt64(this.pos, BigInt(v), true);
    this.pos += 8;
  }
  bytes(b) {
    if (typeof b === "string") b = encoder.encode(b);
    this.u32(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  // Outputs never carry an origin (it is the host's, read-only): `withOrigin` is for sources.
  message(m, withOrigin = true) {
    const has = (v) => v !== undefined && v !== null;
    const origin = withOrigin && has(m.origin);
    this.u32((has(m.key) ? KEY : 0) | (has(m.timestampMs) ? TIMESTAMP : 0) |
      (origin ? ORIGIN : 0) | (has(m.output) ? OUTPUT : 0));
    if (has(m.key)) this.bytes(m.key);
    this.bytes(m.value);
    if (has(m.timestampMs)) this.i64(m.timestampMs);
    const headers = m.headers || [];
    this.u32(headers.length);
    for (const [name, v] of headers) {
      this.bytes(name);
      this.bytes(v);
    }
    if (origin) this.bytes(m.origin);
    if (has(m.output)) this.bytes(m.output);
  }
  done() {
    return this.buf.slice(0, this.pos);
  }
}

export function encodeBatch(messages) {
  const w = new Writer();
  w.u32(messages.length);
  for (const m of messages) w.message(m);
  return w.done();
}

function errorText(e) {
  return e instanceof Error ? e.message : String(e);
}

function settings(config) {
  return Object.fromEntries(config);
}

function callInit(init, config) {
  if (!init) return;
  try {
    init(settings(config));
  } catch (e) {
    throw errorText(e); // init errors are shown to the user as they are
  }
}

/** Wire outcomes of `items`, one per item: `handle(item)` returns its outputs (a message, an
 * array, or null/undefined for none) or throws to fail that item alone. */
export function encodeOutcomes(items, handle) {
  const w = new Writer();
  w.u32(items.length);
  for (const item of items) {
    let out;
    try {
      out = handle(item);
    } catch (e) {
      w.u8(1);
      w.bytes(errorText(e));
      continue;
    }
    out = out === undefined || out === null ? [] : Array.isArray(out) ? out : [out];
    w.u8(0);
    w.u32(out.length);
    for (const o of out) w.message(o, false);
  }
  return w.done();
}

/** A failure of a whole call, with where it happened. */
export function callFailed(e) {
  return `${errorText(e)}\n${e && e.stack ? e.stack : ""}`;
}

/** The exports of the transform world: `export const { init, process } = transform(f)`. */
export function transform(processOne, init) {
  return {
    init: (config) => callInit(init, config),
    process(batch) {
      try {
        return encodeOutcomes(decodeBatch(batch), processOne);
      } catch (e) {
        throw callFailed(e);
      }
    },
  };
}

export { callInit };

/** The exports of the source world: `nextBatch(max, nowMs)` returns up to `max` messages. */
export function source(nextBatch, init) {
  return {
    init: (config) => callInit(init, config),
    next(max, nowMs) {
      let messages;
      try {
        messages = nextBatch(max, Number(nowMs));
      } catch (e) {
        throw `${errorText(e)}\n${e && e.stack ? e.stack : ""}`;
      }
      if (messages.length > max) {
        // Never cut silently: what is left out would be lost.
        throw `source returned ${messages.length} messages but at most ${max} were asked for`;
      }
      return encodeBatch(messages);
    },
  };
}

/** Writes a line to the runtime's log: level is trace, debug, info, warn or error. */
export { log } from "sluice:plugin/host@0.1.0";
