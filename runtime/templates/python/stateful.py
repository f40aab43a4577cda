"""{{name}}: a Sluice stateful plugin. It counts the records of each `name` and adds the count so
far as `visits`; the counts are state the runtime keeps (checkpointed with the source's
positions, restored after a restart, moved with a partition). Each name also gets an event-time
timer an hour after its first visit, which says how many visits it had and forgets it."""

import json
import struct

import sluice

HOUR_MS = 3_600_000
COUNT = struct.Struct("<Q")


def count(ctx: sluice.Context, name: str) -> int:
    old = ctx.get(name.encode())
    return COUNT.unpack(old)[0] if old else 0


def process(msg: sluice.Message, ctx: sluice.Context) -> sluice.Message:
    """One record in, one out. State written here is kept only if the record succeeds."""
    try:
        record = json.loads(msg.value)
    except ValueError as e:
        raise sluice.RecordError(f"not a JSON object ({e})")
    name = record.get("name") if isinstance(record, dict) else None
    if not isinstance(name, str):
        raise sluice.RecordError("no `name` to count by")
    visits = count(ctx, name) + 1
    ctx.put(name.encode(), COUNT.pack(visits))
    if visits == 1 and msg.timestamp_ms is not None:
        ctx.register_event_timer(name.encode(), msg.timestamp_ms + HOUR_MS)
    record["visits"] = visits
    return msg.with_value(json.dumps(record, separators=(",", ":")))


def on_timer(timer: sluice.Fired, ctx: sluice.Context):
    """A name's hour is over: its total, and it is forgotten."""
    name = timer.key.decode()
    total = count(ctx, name)
    ctx.delete(timer.key)
    return [sluice.Message(json.dumps({"name": name, "visits_in_hour": total}).encode())]


WitWorld = sluice.stateful(process, on_timer)
