// {{name}}: a Sluice source plugin. It emits `{"n": N, "at_ms": T}`, one record per
// `interval_ms` of host time (setting, default 1000), each stamped with the time it was due.
import { source } from "./sluice.js";

let intervalMs = 1000;
let startedMs = null;
let n = 0;

// Called once per instance with the pipeline's settings (`--set interval_ms=500`).
function setup(settings) {
  if ("interval_ms" in settings) {
    intervalMs = Number(settings.interval_ms);
    if (!Number.isInteger(intervalMs) || intervalMs <= 0) {
      throw new Error(`interval_ms=${settings.interval_ms} must be > 0 (milliseconds)`);
    }
  }
}

// Up to `max` records due by `nowMs` (the host's clock); none when nothing is due yet.
function due(max, nowMs) {
  if (startedMs === null) startedMs = nowMs;
  const upTo = Math.floor(Math.max(0, nowMs - startedMs) / intervalMs) + 1;
  const out = [];
  while (n < upTo && out.length < max) {
    const at = startedMs + n * intervalMs;
    out.push({ value: JSON.stringify({ n, at_ms: at }), headers: [], timestampMs: at });
    n += 1;
  }
  return out;
}

// The world's exports, `init` and `next`; the helper handles the wire form.
export const { init, next } = source(due, setup);
