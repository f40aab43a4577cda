"""The enrich rule of plugins/enrich, as a Python plugin (componentize-py).

Adds `country` and `country_code` looked up from (latitude, longitude) rounded to 4 decimals,
`status` ("accepted" for Greece, else "rejected"), and renders `timestamp` (epoch seconds) as
`YYYY-MM-DD HH:MM:SS+0000`. Passes the same golden cases as the Rust plugin
(plugins/enrich/tests/cases).
"""

import json
import math

import sluice

# (latitude, longitude) in 1e-4 degrees -> (country, ISO code)
COUNTRIES = {
    (390000, 220000): ("Greece", "GR"),
    (430000, 250000): ("Bulgaria", "BG"),
    (410000, 200000): ("Albania", "AL"),
    (350000, 330000): ("Cyprus", "CY"),
    (540000, -20000): ("United Kingdom", "GB"),
    (380000, -970000): ("United States", "US"),
    (510000, 90000): ("Germany", "DE"),
    (460000, 20000): ("France", "FR"),
    (428333, 128333): ("Italy", "IT"),
    (440000, 210000): ("Serbia", "RS"),
    (451667, 155000): ("Croatia", "HR"),
    (525000, 57500): ("Netherlands", "NL"),
    (390000, 350000): ("Turkey", "TR"),
    (400000, -40000): ("Spain", "ES"),
    (520000, 200000): ("Poland", "PL"),
    (395000, -80000): ("Portugal", "PT"),
    (620000, 150000): ("Sweden", "SE"),
    (497500, 155000): ("Czech Republic", "CZ"),
    (560000, 100000): ("Denmark", "DK"),
    (473333, 133333): ("Austria", "AT"),
    (590000, 260000): ("Estonia", "EE"),
}

# Years 0000 through 9999, the ones with a four-digit rendering.
FIRST, LAST = -62_167_219_200, 253_402_300_799


def round_half_away(x: float) -> int:
    """Rounds like Rust's f64::round (Python's round() rounds half to even)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def country_at(latitude: float, longitude: float):
    key = (round_half_away(latitude * 1e4), round_half_away(longitude * 1e4))
    return COUNTRIES.get(key, ("Unknown", "Unknown"))


def format_timestamp(epoch_seconds: int) -> str:
    """Epoch seconds -> `YYYY-MM-DD HH:MM:SS+0000` (proleptic Gregorian, H. Hinnant's algorithm;
    datetime stops at year 1)."""
    days, secs = divmod(epoch_seconds, 86_400)
    z = days + 719_468
    era, doe = divmod(z, 146_097)
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    return f"{y:04}-{m:02}-{d:02} {secs // 3600:02}:{secs % 3600 // 60:02}:{secs % 60:02}+0000"


def _no_constants(name):
    raise ValueError(f"`{name}` is not JSON")


def number(session: dict, name: str) -> float:
    if name not in session:
        raise sluice.RecordError(f"field `{name}` is missing")
    v = session[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise sluice.RecordError(f"field `{name}` is not a number")
    return v


def enrich(value: bytes) -> bytes:
    try:
        session = json.loads(value, parse_constant=_no_constants)
    except ValueError as e:
        raise sluice.RecordError(f"record is not valid JSON: {e}")
    if not isinstance(session, dict):
        raise sluice.RecordError("record is not a JSON object")
    country, code = country_at(number(session, "latitude"), number(session, "longitude"))
    ts = number(session, "timestamp")
    if not math.isfinite(ts):
        raise sluice.RecordError(f"field `timestamp` is out of range (years 0000-9999): {ts}")
    ts = math.floor(ts)
    if not FIRST <= ts <= LAST:
        raise sluice.RecordError(f"field `timestamp` is out of range (years 0000-9999): {ts}")
    session["timestamp"] = format_timestamp(ts)
    session["country"] = country
    session["country_code"] = code
    session["status"] = "accepted" if country == "Greece" else "rejected"
    return json.dumps(session, separators=(",", ":"), ensure_ascii=False).encode()


def process(msg: sluice.Message) -> sluice.Message:
    return msg.with_value(enrich(msg.value))


WitWorld = sluice.transform(process)
