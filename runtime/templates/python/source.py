"""{{name}}: a Sluice source plugin. It emits `{"n": N, "at_ms": T}`, one record per
`interval_ms` of host time (setting, default 1000), each stamped with the time it was due."""

import json

import sluice

state = {"interval_ms": 1000, "started_ms": None, "n": 0}


def init(settings: dict) -> None:
    """Called once per instance with the pipeline's settings (`--set interval_ms=500`)."""
    interval = settings.get("interval_ms", "1000")
    if not interval.isdigit() or int(interval) <= 0:
        raise ValueError(f"interval_ms={interval} must be > 0 (milliseconds)")
    state["interval_ms"] = int(interval)


def next_batch(limit: int, now_ms: int) -> list:
    """Up to `limit` records due by `now_ms` (the host's clock); none when nothing is due yet."""
    if state["started_ms"] is None:
        state["started_ms"] = now_ms
    start, interval = state["started_ms"], state["interval_ms"]
    due = max(0, now_ms - start) // interval + 1
    out = []
    while state["n"] < due and len(out) < limit:
        at = start + state["n"] * interval
        value = json.dumps({"n": state["n"], "at_ms": at}, separators=(",", ":"))
        out.append(sluice.Message(value.encode(), timestamp_ms=at))
        state["n"] += 1
    return out


WitWorld = sluice.source(next_batch, init=init)
