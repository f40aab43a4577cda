// {{name}}: a Sluice stateful plugin. It counts the records of each `name` and adds the count
// so far as `visits`; the counts are state the runtime keeps (checkpointed with the source's
// positions, restored after a restart, moved with a partition). Each name also gets an
// event-time timer an hour after its first visit, which says how many visits it had.
import { text, withValue } from "./sluice.js";
import { stateful } from "./stateful.js";

const HOUR_MS = 3600000;
const enc = new TextEncoder();

function count(ctx, name) {
  const v = ctx.get(name);
  return v ? Number(new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true)) : 0;
}

function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

// One record in, one out. State written here is kept only if the record succeeds.
function visit(msg, ctx) {
  const record = JSON.parse(text(msg.value));
  if (typeof record?.name !== "string") throw new Error("no `name` to count by");
  const visits = count(ctx, record.name) + 1;
  ctx.put(record.name, u64(visits));
  if (visits === 1 && msg.timestampMs !== undefined) {
    ctx.registerEventTimer(record.name, Number(msg.timestampMs) + HOUR_MS);
  }
  record.visits = visits;
  return withValue(msg, JSON.stringify(record));
}

// A name's hour is over: its total, and it is forgotten.
function hourOver(timer, ctx) {
  const name = text(timer.key);
  const total = count(ctx, name);
  ctx.delete(name);
  return [{ value: enc.encode(JSON.stringify({ name, visits_in_hour: total })), headers: [] }];
}

export const { init, process, onTimer, checkState } = stateful(visit, hourOver);
