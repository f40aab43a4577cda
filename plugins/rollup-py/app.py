"""The rollup of plugins/rollup as a Python plugin (componentize-py, the `stateful` world).

Counts records per `keys` (default `country,status`) in tumbling event-time windows of `window`
(default 60s), closed `lateness` (default 10s) after their end; each closed window gives one
JSON record per key: `window_start`, `window_end` (RFC 3339), the key fields and `sessions`.
Passes the same golden cases as the Rust plugin (plugins/rollup/tests/cases).
"""

import datetime
import json
import struct

import sluice

SETTINGS = {"window_ms": 60_000, "lateness_ms": 10_000, "time_field": "timestamp",
            "keys": ["country", "status"], "count_field": "sessions"}
_COUNT = struct.Struct("<Q")
_UNITS = {"ms": 1, "": 1000, "s": 1000, "m": 60_000, "h": 3_600_000}


def _duration_ms(text: str) -> int:
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits == 0 or text[digits:] not in _UNITS:
        raise sluice.RecordError(f"`{text}` is not a duration (e.g. 60s, 2m)")
    return int(text[:digits]) * _UNITS[text[digits:]]


def init(settings: dict) -> None:
    if "window" in settings:
        SETTINGS["window_ms"] = _duration_ms(settings["window"])
    if "lateness" in settings:
        SETTINGS["lateness_ms"] = _duration_ms(settings["lateness"])
    SETTINGS["time_field"] = settings.get("time_field", "timestamp")
    if "keys" in settings:
        SETTINGS["keys"] = [k.strip() for k in settings["keys"].split(",") if k.strip()]
    SETTINGS["count_field"] = settings.get("count_field", "sessions")


def _event_ms(value):
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value) if abs(value) >= 1e11 else int(value * 1000)
    if isinstance(value, str):
        text = value.replace(" ", "T", 1)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
            text = text[:-2] + ":" + text[-2:]  # +0000 -> +00:00
        try:
            at = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=datetime.timezone.utc)
        return int(at.timestamp() * 1000)
    return None


def _rfc3339(ms: int) -> str:
    at = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if ms % 1000 == 0 else \
        at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _window_key(start_ms: int) -> bytes:
    # Sign flipped, big-endian: windows sort by time (the Rust plugin's layout).
    return b"w" + struct.pack(">Q", (start_ms & 0xFFFFFFFFFFFFFFFF) ^ (1 << 63))


def process(msg: sluice.Message, ctx: sluice.Context):
    try:
        record = json.loads(msg.value)
    except ValueError as e:
        raise sluice.RecordError(f"not a JSON record: {e}")
    at = _event_ms(record.get(SETTINGS["time_field"])) if isinstance(record, dict) else None
    if at is None:
        raise sluice.RecordError(
            f"no event time: field `{SETTINGS['time_field']}` is missing or not a timestamp")
    window = SETTINGS["window_ms"]
    start = at // window * window
    closes = start + window + SETTINGS["lateness_ms"]
    seen = ctx.stream_time()
    if seen is not None and seen >= closes:
        return None  # its window closed already: too late to count
    ctx.observe_event_time(at)
    parts = []
    for field in SETTINGS["keys"]:
        v = record.get(field)
        parts.append(b"" if v is None else (v if isinstance(v, str) else json.dumps(v)).encode())
    key = _window_key(start) + b"\x00".join(parts)
    old = ctx.get(key)
    ctx.put(key, _COUNT.pack((_COUNT.unpack(old)[0] if old else 0) + 1))
    ctx.register_event_timer(_window_key(start), closes)
    return None


def on_timer(timer: sluice.Fired, ctx: sluice.Context):
    start = (struct.unpack(">Q", timer.key[1:9])[0] ^ (1 << 63))
    if start >= 1 << 63:
        start -= 1 << 64
    end = start + SETTINGS["window_ms"]
    out = []
    for key, value in ctx.scan(timer.key):
        record = {"window_start": _rfc3339(start), "window_end": _rfc3339(end)}
        for field, part in zip(SETTINGS["keys"], key[9:].split(b"\x00")):
            record[field] = part.decode()
        record[SETTINGS["count_field"]] = _COUNT.unpack(value)[0]
        ctx.delete(key)
        out.append(sluice.Message(json.dumps(record, separators=(",", ":")).encode(),
                                  timestamp_ms=end))
    return out


def check_state(entries) -> None:
    """A hot swap's check, as the Rust plugin's: counts under window keys of this window length
    and these key fields."""
    for key, value in entries:
        if len(key) < 9 or key[:1] != b"w" or len(value) != _COUNT.size:
            raise ValueError(f"key {key!r} is not a window's count: the state is another plugin's")
        start = (struct.unpack(">Q", key[1:9])[0] ^ (1 << 63))
        start = start - (1 << 64) if start >= 1 << 63 else start
        if start % SETTINGS["window_ms"]:
            raise ValueError(f"a window starts at {start} ms, which window={SETTINGS['window_ms']} "
                             "ms does not divide: the state was kept with another window length")
        if len(key[9:].split(b"\x00")) != max(len(SETTINGS["keys"]), 1):
            raise ValueError("the state counts per other key fields than keys="
                             f"{','.join(SETTINGS['keys'])}: keep keys= as it was")


WitWorld = sluice.stateful(process, on_timer, init, check_state)
