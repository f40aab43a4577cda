// Stateful plugins in JavaScript (the `stateful` world): keyed state and timers of the source
// lane being processed, kept by the host across restarts, swaps and rebalances.
//
//     import { stateful } from "./stateful.js";
//     export const { init, process, onTimer, checkState } = stateful(
//       (msg, ctx) => { ctx.put(key, value); ctx.registerEventTimer(key, atMs); },
//       (fired, ctx) => [ /* messages */ ],
//     );
//
// Keys and values are Uint8Array (strings are UTF-8 encoded). Writes are kept by the context
// and reach the host only if the message succeeds: one that throws leaves nothing behind.

import * as state from "sluice:plugin/state@0.1.0";
import * as timers from "sluice:plugin/timers@0.1.0";
import { callFailed, callInit, decodeBatch, encodeOutcomes } from "./sluice.js";

const encoder = new TextEncoder();
const bytes = (v) => (typeof v === "string" ? encoder.encode(v) : v);
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (h) => Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));

export const EVENT_TIME = "event-time";
export const PROCESSING_TIME = "processing-time";

/** The lane's state and timers while one message or timer is handled. */
export class Context {
  constructor() {
    this.writes = new Map(); // hex key -> { value, ttlMs } or null for a delete
    this.timers = [];
    this.eventTime = undefined;
  }
  get(key) {
    const k = hex(bytes(key));
    if (this.writes.has(k)) {
      const w = this.writes.get(k);
      return w ? w.value : undefined;
    }
    return state.getMany([bytes(key)])[0] ?? undefined;
  }
  /** `ttlMs` > 0: the entry expires that long after it is put (processing time). */
  put(key, value, ttlMs = 0) {
    this.writes.set(hex(bytes(key)), { value: bytes(value), ttlMs });
  }
  delete(key) {
    this.writes.set(hex(bytes(key)), null);
  }
  /** Every live entry whose key starts with `prefix`, in key order: [[key, value], ...]. */
  scan(prefix) {
    const p = bytes(prefix);
    const found = new Map();
    let after;
    for (;;) {
      const page = state.scan(p, after, 256);
      for (const [k, v] of page) found.set(hex(k), v);
      if (page.length < 256) break;
      after = page[page.length - 1][0];
    }
    const ph = hex(p);
    for (const [k, w] of this.writes) {
      if (!k.startsWith(ph)) continue;
      if (w) found.set(k, w.value);
      else found.delete(k);
    }
    return [...found.keys()].sort().map((k) => [unhex(k), found.get(k)]);
  }
  registerEventTimer(key, atMs) {
    this.timers.push(["register", bytes(key), atMs, EVENT_TIME]);
  }
  registerProcessingTimer(key, atMs) {
    this.timers.push(["register", bytes(key), atMs, PROCESSING_TIME]);
  }
  deleteTimer(key, atMs, domain) {
    this.timers.push(["delete", bytes(key), atMs, domain]);
  }
  /** The message's event time as read from its value: moves stream time on. */
  observeEventTime(atMs) {
    this.eventTime = this.eventTime === undefined ? atMs : Math.max(this.eventTime, atMs);
  }
  /** The lane's stream time (the highest event time seen), or undefined. */
  streamTime() {
    const t = timers.streamTime();
    return t === undefined || t === null ? undefined : Number(t);
  }
  commit() {
    const puts = [];
    const deletes = [];
    for (const [k, w] of this.writes) {
      if (w) puts.push({ key: unhex(k), value: w.value, ttlMs: BigInt(w.ttlMs) });
      else deletes.push(unhex(k));
    }
    if (puts.length) state.putMany(puts); // throws past the lane's state limit
    if (deletes.length) state.deleteMany(deletes);
    for (const [op, key, at, domain] of this.timers) {
      (op === "register" ? timers.register : timers.delete)(key, BigInt(at), domain);
    }
    if (this.eventTime !== undefined) timers.observeEventTime(BigInt(this.eventTime));
  }
}

function handled(call) {
  const ctx = new Context();
  const out = call(ctx);
  ctx.commit();
  return out;
}

/** The exports of the stateful world:
 * `export const { init, process, onTimer, checkState } = stateful(process, onTimer, init, check)`.
 * A fired timer is `{ key, atMs, domain }`. `check(entries)`, given `[key, value]` pairs of the
 * state this version would take over in a hot swap, throws to refuse it; without it every state
 * is accepted. */
export function stateful(processOne, onTimer, init, check) {
  return {
    init: (config) => callInit(init, config),
    checkState(sample) {
      if (!check) return;
      try {
        check(sample.map(([k, v]) => [k, v]));
      } catch (e) {
        throw e instanceof Error ? e.message : String(e); // the reason the swap is refused
      }
    },
    process(batch) {
      try {
        return encodeOutcomes(decodeBatch(batch), (m) => handled((ctx) => processOne(m, ctx)));
      } catch (e) {
        throw callFailed(e);
      }
    },
    onTimer(fired) {
      try {
        const list = fired.map((f) => ({ key: f.key, atMs: Number(f.atMs), domain: f.domain }));
        return encodeOutcomes(list, (t) => handled((ctx) => onTimer(t, ctx)));
      } catch (e) {
        throw callFailed(e);
      }
    },
  };
}
