"""Sluice guest SDK for Python plugins built with componentize-py.

It hides the wire form of `wit/WIRE.md`: a plugin is a plain function over `Message` values.

    import sluice

    def process(msg: sluice.Message):
        return msg.with_value(msg.value.upper())   # or a list, or None to drop it

    WitWorld = sluice.transform(process)

A `process` function returns one `Message`, a list of them (flat-map; empty = filtered out) or
`None` (filtered out). Raising `sluice.RecordError` (or any other exception) fails that record
alone: the runtime routes it by the pipeline's error policy (fail, skip or dead-letter).
"""

import struct
import traceback
from typing import Callable, Iterable, List, Optional, Tuple, Union

try:
    from componentize_py_types import Err
except ImportError:  # run natively (unit tests of a plugin's logic): no component around it

    class Err(Exception):
        def __init__(self, value):
            super().__init__(value)
            self.value = value

__all__ = ["Message", "RecordError", "transform", "source", "stateful", "Context", "Fired",
           "MemoryState", "EVENT_TIME", "PROCESSING_TIME", "log", "decode_batch",
           "encode_batch", "encode_outcomes"]

KEY, TIMESTAMP, ORIGIN, OUTPUT = 1, 2, 4, 8
_KNOWN = KEY | TIMESTAMP | ORIGIN | OUTPUT
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
# The common shapes in one call each (this code runs once per record, interpreted in wasm):
# an input's flags and key/value length, and an outcome of one output with only a value.
_U32_U32 = struct.Struct("<II")
_ONE_VALUE = struct.Struct("<BIII")  # ok, 1 output, flags 0, value length
_NO_HEADERS = b"\0\0\0\0"


class RecordError(Exception):
    """This record failed; the message says why (it reaches the log and dead letters)."""


class Message:
    """A record: value, key, headers, timestamp; `origin` says where an input came from
    (read-only), `output` names the named output an output goes to (None: the main sink)."""

    __slots__ = ("value", "key", "headers", "timestamp_ms", "origin", "output")

    def __init__(self, value: bytes, key: Optional[bytes] = None,
                 headers: Optional[List[Tuple[str, bytes]]] = None,
                 timestamp_ms: Optional[int] = None, origin: Optional[str] = None,
                 output: Optional[str] = None):
        self.value = value
        self.key = key
        self.headers = [] if headers is None else headers
        self.timestamp_ms = timestamp_ms
        self.origin = origin
        self.output = output

    def with_value(self, value: Union[bytes, str]) -> "Message":
        """This message with a new value: key, headers and timestamp are kept."""
        if isinstance(value, str):
            value = value.encode()
        return Message(value, self.key, self.headers, self.timestamp_ms, None, self.output)

    def header(self, name: str) -> Optional[bytes]:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def _fields(self):
        return (self.value, self.key, self.headers, self.timestamp_ms, self.origin, self.output)

    def __eq__(self, other):
        return isinstance(other, Message) and self._fields() == other._fields()

    def __repr__(self):
        return ("Message(value={!r}, key={!r}, headers={!r}, timestamp_ms={!r}, origin={!r}, "
                "output={!r})").format(*self._fields())


def log(level: str, message: str) -> None:
    """Writes a line to the runtime's log: level is trace, debug, info, warn or error."""
    from wit_world.imports import host

    host.log(getattr(host.Level, level.upper()), message)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def fail(self, what: str):
        raise ValueError(f"malformed wire buffer at byte {self.pos}: {what}")

    def u32(self) -> int:
        if self.pos + 4 > len(self.buf):
            self.fail("length past the end")
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def bytes(self) -> bytes:
        n = self.u32()
        if self.pos + n > len(self.buf):
            self.fail("length past the end")
        v = self.buf[self.pos:self.pos + n]
        self.pos += n
        return v

    def text(self) -> str:
        return self.bytes().decode("utf-8")


def decode_batch(buf: bytes) -> List[Message]:
    r = _Reader(buf)
    out = []
    append = out.append
    end = len(buf)
    u32_u32 = _U32_U32.unpack_from
    for _ in range(r.u32()):
        pos = r.pos
        if pos + 8 <= end:
            flags, n = u32_u32(buf, pos)
            if flags == ORIGIN:
                # The common input (a value and its origin, no key, time or headers) in one
                # go; anything else, or anything short, takes the checked path below.
                value_end = pos + 8 + n
                if value_end + 8 <= end:
                    headers, n = u32_u32(buf, value_end)
                    origin_end = value_end + 8 + n
                    if headers == 0 and origin_end <= end:
                        origin = buf[value_end + 8:origin_end].decode("utf-8")
                        append(Message(buf[pos + 8:value_end], None, [], None, origin))
                        r.pos = origin_end
                        continue
        flags = r.u32()
        if flags & ~_KNOWN:
            r.fail(f"unknown flags {flags:#x}")
        key = r.bytes() if flags & KEY else None
        value = r.bytes()
        ts = None
        if flags & TIMESTAMP:
            if r.pos + 8 > end:
                r.fail("length past the end")
            (ts,) = _I64.unpack_from(buf, r.pos)
            r.pos += 8
        headers = [(r.text(), r.bytes()) for _ in range(r.u32())]
        origin = r.text() if flags & ORIGIN else None
        output = r.text() if flags & OUTPUT else None
        append(Message(value, key, headers, ts, origin, output))
    if r.pos != end:
        r.fail("trailing bytes")
    return out


def _put_bytes(parts: list, b: bytes) -> None:
    parts.append(_U32.pack(len(b)))
    parts.append(b)


def _put_message(parts: list, m: Message, with_origin: bool = True) -> None:
    # Outputs never carry an origin (it is the host's, read-only).
    origin = m.origin if with_origin else None
    value = m.value.encode() if isinstance(m.value, str) else bytes(m.value)
    flags = ((KEY if m.key is not None else 0) | (TIMESTAMP if m.timestamp_ms is not None else 0)
             | (ORIGIN if origin is not None else 0) | (OUTPUT if m.output is not None else 0))
    parts.append(_U32.pack(flags))
    if m.key is not None:
        _put_bytes(parts, bytes(m.key))
    _put_bytes(parts, value)
    if m.timestamp_ms is not None:
        parts.append(_I64.pack(m.timestamp_ms))
    parts.append(_U32.pack(len(m.headers)))
    for name, v in m.headers:
        _put_bytes(parts, name.encode())
        _put_bytes(parts, v.encode() if isinstance(v, str) else bytes(v))
    if origin is not None:
        _put_bytes(parts, origin.encode())
    if m.output is not None:
        _put_bytes(parts, m.output.encode())


def encode_batch(messages: Iterable[Message]) -> bytes:
    messages = list(messages)
    parts = [_U32.pack(len(messages))]
    for m in messages:
        _put_message(parts, m)
    return b"".join(parts)


def encode_outcomes(outcomes: List[Union[List[Message], str]]) -> bytes:
    """One outcome per input: a list of outputs, or a str = this record's error."""
    parts = [_U32.pack(len(outcomes))]
    append = parts.append
    one_value = _ONE_VALUE.pack
    for o in outcomes:
        if isinstance(o, str):
            append(b"\x01")
            _put_bytes(parts, o.encode())
            continue
        if len(o) == 1:
            m = o[0]
            value = m.value
            if (m.key is None and m.timestamp_ms is None and not m.headers and m.output is None
                    and type(value) is bytes):
                # The common outcome, one output with only a value: one pack, no helper calls.
                append(one_value(0, 1, 0, len(value)))
                append(value)
                append(_NO_HEADERS)
                continue
        append(b"\x00")
        append(_U32.pack(len(o)))
        for m in o:
            _put_message(parts, m, with_origin=False)
    return b"".join(parts)


def _error_text(e: BaseException) -> str:
    if isinstance(e, RecordError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _messages(out) -> List[Message]:
    """What a plugin function returned (None, one message, or several) as a list."""
    if out is None:
        return []
    if isinstance(out, Message):
        return [out]
    return list(out)


def _settings(config: List[Tuple[str, str]]) -> dict:
    return {k: v for k, v in config}


def _call_init(init, config) -> None:
    if init is None:
        return
    try:
        init(_settings(config))
    except Exception as e:  # init errors are shown to the user as they are
        raise Err(_error_text(e))


def transform(process: Callable[[Message], Union[None, Message, List[Message]]],
              init: Optional[Callable[[dict], None]] = None):
    """The class componentize-py exports for the transform world: `WitWorld = transform(f)`."""

    def one(msg: Message) -> Union[List[Message], str]:
        try:
            return _messages(process(msg))
        except Exception as e:
            return _error_text(e)

    class WitWorld:
        def init(self, config):
            _call_init(init, config)

        def process(self, batch: bytes) -> bytes:
            try:
                messages = decode_batch(batch)
                return encode_outcomes([one(m) for m in messages])
            except Exception:
                raise Err(traceback.format_exc(limit=3))

    return WitWorld


def source(next_batch: Callable[[int, int], List[Message]],
           init: Optional[Callable[[dict], None]] = None):
    """The class for the source world: `next_batch(max, now_ms)` returns up to `max` messages."""

    class WitWorld:
        def init(self, config):
            _call_init(init, config)

        def next(self, max: int, now_ms: int) -> bytes:
            try:
                messages = list(next_batch(max, now_ms))
            except Exception:
                raise Err(traceback.format_exc(limit=3))
            if len(messages) > max:
                # Never cut silently: what is left out would be lost.
                raise Err(f"source returned {len(messages)} messages but at most {max} were asked for")
            return encode_batch(messages)

    return WitWorld


# ---- Stateful plugins: keyed state and timers of the lane being processed ----------------

EVENT_TIME, PROCESSING_TIME = "event-time", "processing-time"


class Fired:
    """A timer that fired: its key, time (ms) and domain (EVENT_TIME or PROCESSING_TIME)."""
    __slots__ = ("key", "at_ms", "domain")

    def __init__(self, key: bytes, at_ms: int, domain: str):
        self.key, self.at_ms, self.domain = key, at_ms, domain


class Context:
    """The lane's state and timers while one message or timer is handled. Writes are kept here
    and reach the host in one call only if the message succeeds."""

    def __init__(self, host):
        self._host = host
        self._writes = {}  # key -> (value, ttl_ms), or None for a delete
        self._timers = []
        self._event_time = None

    def get(self, key: bytes) -> Optional[bytes]:
        if key in self._writes:
            w = self._writes[key]
            return None if w is None else w[0]
        return self._host.get_many([key])[0]

    def put(self, key: bytes, value: bytes, ttl_ms: int = 0) -> None:
        """`ttl_ms` > 0: the entry expires that long after it is put (processing time)."""
        self._writes[key] = (value, ttl_ms)

    def delete(self, key: bytes) -> None:
        self._writes[key] = None

    def scan(self, prefix: bytes) -> List[Tuple[bytes, bytes]]:
        """Every live entry whose key starts with `prefix`, in key order."""
        found, after = {}, None
        while True:
            page = self._host.scan(prefix, after, 256)
            found.update(page)
            if len(page) < 256:
                break
            after = page[-1][0]
        for k, w in self._writes.items():
            if k.startswith(prefix):
                if w is None:
                    found.pop(k, None)
                else:
                    found[k] = w[0]
        return sorted(found.items())

    def register_event_timer(self, key: bytes, at_ms: int) -> None:
        self._timers.append(("register", key, at_ms, EVENT_TIME))

    def register_processing_timer(self, key: bytes, at_ms: int) -> None:
        self._timers.append(("register", key, at_ms, PROCESSING_TIME))

    def delete_timer(self, key: bytes, at_ms: int, domain: str) -> None:
        self._timers.append(("delete", key, at_ms, domain))

    def observe_event_time(self, at_ms: int) -> None:
        """The message's event time as read from its value: moves stream time on."""
        self._event_time = at_ms if self._event_time is None else max(self._event_time, at_ms)

    def stream_time(self) -> Optional[int]:
        return self._host.stream_time()

    def _commit(self) -> None:
        puts = [(k, w[0], w[1]) for k, w in self._writes.items() if w is not None]
        deletes = [k for k, w in self._writes.items() if w is None]
        if puts:
            self._host.put_many(puts)  # raises past the lane's state limit
        if deletes:
            self._host.delete_many(deletes)
        for op, key, at, domain in self._timers:
            (self._host.register if op == "register" else self._host.delete_timer)(key, at, domain)
        if self._event_time is not None:
            self._host.observe(self._event_time)


class _CallHost:
    """The host as one `process` or `on-timer` call sees it. Nothing else changes the lane's
    state meanwhile, so values read or written are kept for the call, stream time is asked for
    once and moved on at the end, and a timer registered again is registered once: about one
    host call per message where a rollup made five."""

    def __init__(self, host):
        self._host = host
        self._values = {}  # key -> value as the host holds it now, None if absent
        self._stream_time = ()  # () until asked
        self._observed = None
        self._registered = set()  # since the call's last timer delete

    def get_many(self, keys):
        missing = [k for k in keys if k not in self._values]
        if missing:
            self._values.update(zip(missing, self._host.get_many(missing)))
        return [self._values[k] for k in keys]

    def put_many(self, entries):
        self._host.put_many(entries)
        for k, v, _ in entries:
            self._values[k] = v

    def delete_many(self, keys):
        self._host.delete_many(keys)
        for k in keys:
            self._values[k] = None

    def scan(self, prefix, after, limit):
        return self._host.scan(prefix, after, limit)  # writes reach the host as they are made

    def register(self, key, at_ms, domain):
        if (key, at_ms, domain) not in self._registered:
            self._registered.add((key, at_ms, domain))
            self._host.register(key, at_ms, domain)

    def delete_timer(self, key, at_ms, domain):
        self._registered.clear()
        self._host.delete_timer(key, at_ms, domain)

    def observe(self, at_ms):
        self._observed = at_ms if self._observed is None else max(self._observed, at_ms)

    def stream_time(self):
        if self._stream_time == ():
            self._stream_time = self._host.stream_time()
        if self._observed is None:
            return self._stream_time
        return self._observed if self._stream_time is None else max(self._stream_time, self._observed)

    def finish(self):
        """Hands what was put off to the host: the call's stream time."""
        if self._observed is not None:
            self._host.observe(self._observed)


class _WasmHost:
    """The host's state and timers, through the stateful world's imports."""

    def __init__(self):
        from wit_world.imports import state, timers
        self._state, self._timers = state, timers
        self._domains = {EVENT_TIME: timers.Domain.EVENT_TIME,
                         PROCESSING_TIME: timers.Domain.PROCESSING_TIME}

    def get_many(self, keys):
        return self._state.get_many(keys)

    def put_many(self, entries):
        try:
            self._state.put_many([self._state.Entry(key=k, value=v, ttl_ms=t) for k, v, t in entries])
        except Err as e:
            raise RecordError(str(e.value))

    def delete_many(self, keys):
        self._state.delete_many(keys)

    def scan(self, prefix, after, limit):
        return self._state.scan(prefix, after, limit)

    def register(self, key, at_ms, domain):
        self._timers.register(key, at_ms, self._domains[domain])

    def delete_timer(self, key, at_ms, domain):
        self._timers.delete(key, at_ms, self._domains[domain])

    def observe(self, at_ms):
        self._timers.observe_event_time(at_ms)

    def stream_time(self):
        return self._timers.stream_time()

    def domain_of(self, wit_domain) -> str:
        return EVENT_TIME if wit_domain == self._timers.Domain.EVENT_TIME else PROCESSING_TIME


class MemoryState:
    """The host's part for native tests of a stateful plugin's logic."""

    def __init__(self):
        self.entries, self.timers, self.stream, self.now_ms = {}, set(), None, 0

    def get_many(self, keys):
        out = []
        for k in keys:
            e = self.entries.get(k)
            out.append(e[0] if e and (e[1] is None or e[1] > self.now_ms) else None)
        return out

    def put_many(self, entries):
        for k, v, ttl in entries:
            self.entries[k] = (v, self.now_ms + ttl if ttl else None)

    def delete_many(self, keys):
        for k in keys:
            self.entries.pop(k, None)

    def scan(self, prefix, after, limit):
        keys = sorted(k for k, e in self.entries.items()
                      if k.startswith(prefix) and (after is None or k > after)
                      and (e[1] is None or e[1] > self.now_ms))
        return [(k, self.entries[k][0]) for k in keys[:limit]]

    def register(self, key, at_ms, domain):
        self.timers.add((at_ms, domain, key))

    def delete_timer(self, key, at_ms, domain):
        self.timers.discard((at_ms, domain, key))

    def observe(self, at_ms):
        self.stream = at_ms if self.stream is None else max(self.stream, at_ms)

    def stream_time(self):
        return self.stream

    def due(self):
        """Takes the timers due, in time order."""
        due = sorted(t for t in self.timers
                     if (t[1] == EVENT_TIME and self.stream is not None and t[0] <= self.stream)
                     or (t[1] == PROCESSING_TIME and t[0] <= self.now_ms))
        self.timers.difference_update(due)
        return [Fired(k, at, d) for at, d, k in due]


def stateful(process: Callable[[Message, Context], Union[None, Message, List[Message]]],
             on_timer: Callable[[Fired, Context], List[Message]],
             init: Optional[Callable[[dict], None]] = None,
             check_state: Optional[Callable[[List[Tuple[bytes, bytes]]], None]] = None):
    """The class componentize-py exports for the stateful world: `process(msg, ctx)` per message
    and `on_timer(fired, ctx)` per fired timer, each with the lane's state and timers.
    `check_state(entries)` is shown (key, value) pairs of the state this version would take over
    in a hot swap, and raises to refuse it; without it every state is accepted."""

    host = []  # made at the first call: the imports exist only inside the component

    def the_host():
        if not host:
            host.append(_WasmHost())
        return host[0]

    def handle(call, host) -> Union[List[Message], str]:
        ctx = Context(host)
        try:
            out = _messages(call(ctx))
            ctx._commit()
            return out
        except Exception as e:
            return _error_text(e)

    class WitWorld:
        def init(self, config):
            _call_init(init, config)

        def process(self, batch: bytes) -> bytes:
            try:
                messages, call = decode_batch(batch), _CallHost(the_host())
                out = encode_outcomes([handle(lambda ctx, m=m: process(m, ctx), call) for m in messages])
                call.finish()
                return out
            except Exception:
                raise Err(traceback.format_exc(limit=3))

        def on_timer(self, fired) -> bytes:
            try:
                timers = [Fired(f.key, f.at_ms, the_host().domain_of(f.domain)) for f in fired]
                call = _CallHost(the_host())
                out = encode_outcomes([handle(lambda ctx, t=t: on_timer(t, ctx), call) for t in timers])
                call.finish()
                return out
            except Exception:
                raise Err(traceback.format_exc(limit=3))

        def check_state(self, sample) -> None:
            if check_state is None:
                return
            try:
                check_state([(bytes(k), bytes(v)) for k, v in sample])
            except Exception as e:  # the reason the swap is refused, shown as it is
                raise Err(_error_text(e))

    return WitWorld

