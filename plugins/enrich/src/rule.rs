//! The enrichment rule itself, shared by the `enrich` plugin and its tagged variant.

use crate::json;
use sluice_sdk::{Config, Error, IntoOutputs, Message, Transform};

/// (latitude, longitude) in 1e-4 degrees -> (country, ISO code).
pub const COUNTRIES: [((i64, i64), &str, &str); 21] = [
    ((390000, 220000), "Greece", "GR"),
    ((430000, 250000), "Bulgaria", "BG"),
    ((410000, 200000), "Albania", "AL"),
    ((350000, 330000), "Cyprus", "CY"),
    ((540000, -20000), "United Kingdom", "GB"),
    ((380000, -970000), "United States", "US"),
    ((510000, 90000), "Germany", "DE"),
    ((460000, 20000), "France", "FR"),
    ((428333, 128333), "Italy", "IT"),
    ((440000, 210000), "Serbia", "RS"),
    ((451667, 155000), "Croatia", "HR"),
    ((525000, 57500), "Netherlands", "NL"),
    ((390000, 350000), "Turkey", "TR"),
    ((400000, -40000), "Spain", "ES"),
    ((520000, 200000), "Poland", "PL"),
    ((395000, -80000), "Portugal", "PT"),
    ((620000, 150000), "Sweden", "SE"),
    ((497500, 155000), "Czech Republic", "CZ"),
    ((560000, 100000), "Denmark", "DK"),
    ((473333, 133333), "Austria", "AT"),
    ((590000, 260000), "Estonia", "EE"),
];

/// The country at these coordinates, after rounding each to 4 decimals.
pub fn country_at(latitude: f64, longitude: f64) -> (&'static str, &'static str) {
    let key = (
        (latitude * 1e4).round() as i64,
        (longitude * 1e4).round() as i64,
    );
    COUNTRIES
        .iter()
        .find(|(k, _, _)| *k == key)
        .map_or(("Unknown", "Unknown"), |&(_, name, code)| (name, code))
}

/// Timestamps of years 0000 through 9999, the ones with a four-digit rendering.
pub const TIMESTAMPS: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;

/// Renders epoch seconds (within [`TIMESTAMPS`]) as `YYYY-MM-DD HH:MM:SS+0000` (UTC).
pub fn format_timestamp(epoch_seconds: i64) -> [u8; 24] {
    let days = epoch_seconds.div_euclid(86_400);
    let secs = epoch_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let two = |v: i64| {
        let v = v.clamp(0, 99);
        [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]
    };
    let [y0, y1] = two(y / 100);
    let [y2, y3] = two(y % 100);
    let [m0, m1] = two(m);
    let [d0, d1] = two(d);
    let [h0, h1] = two(hh);
    let [i0, i1] = two(mm);
    let [s0, s1] = two(ss);
    [
        y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1, b' ', h0, h1, b':', i0, i1, b':', s0, s1, b'+',
        b'0', b'0', b'0', b'0',
    ]
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The fields enrich reads or writes.
const FIELDS: [&str; 6] = [
    "latitude",
    "longitude",
    "timestamp",
    "country",
    "country_code",
    "status",
];

/// What the rule decided about a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Rejected,
}

/// Enriches one session (a JSON object) into `out`; returns the status it was given.
pub fn enrich_json(input: &[u8], out: &mut Vec<u8>) -> Result<Status, String> {
    let fields = json::scan_object(input, &FIELDS)?;
    let number = |i: usize| -> Result<f64, String> {
        let span = fields.spans[i]
            .clone()
            .ok_or_else(|| format!("field `{}` is missing", FIELDS[i]))?;
        json::parse_number(&input[span])
            .ok_or_else(|| format!("field `{}` is not a number", FIELDS[i]))
    };
    let (country, code) = country_at(number(0)?, number(1)?);
    let timestamp = number(2)?.floor();
    if !TIMESTAMPS.contains(&(timestamp as i64)) || !timestamp.is_finite() {
        return Err(format!(
            "field `timestamp` is out of range (years 0000-9999): {timestamp}"
        ));
    }
    let accepted = country.contains("Greece");
    let status: &[u8] = if accepted {
        b"\"accepted\""
    } else {
        b"\"rejected\""
    };

    // The new values, quoted, on the stack: "<timestamp>""<country>""<code>"
    let mut values = [0u8; 64];
    let mut len = 0;
    let mut ends = [0usize; 3];
    for (slot, text) in [
        &format_timestamp(timestamp as i64)[..],
        country.as_bytes(),
        code.as_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        values[len] = b'"';
        values[len + 1..len + 1 + text.len()].copy_from_slice(text);
        len += text.len() + 2;
        values[len - 1] = b'"';
        ends[slot] = len;
    }
    // latitude and longitude keep their values: rewriting a value with itself changes nothing.
    let keep = |i: usize| fields.spans[i].clone().map_or(&b""[..], |r| &input[r]);
    let set = [
        keep(0),
        keep(1),
        &values[..ends[0]],
        &values[ends[0]..ends[1]],
        &values[ends[1]..ends[2]],
        status,
    ];
    json::rewrite(input, &FIELDS, &fields, set, out);
    Ok(if accepted {
        Status::Accepted
    } else {
        Status::Rejected
    })
}

/// The plugin: one session in, one enriched session out; a record that is not a session fails
/// alone and is routed by the pipeline's error policy. With the setting `rejected_output=NAME`,
/// rejected sessions go to the pipeline's output NAME instead of its sink.
#[derive(Debug, Default)]
pub struct Enrich {
    rejected_output: Option<String>,
}

impl Transform for Enrich {
    fn init(settings: &Config) -> Result<Self, Error> {
        let rejected_output = settings.get("rejected_output").map(str::to_owned);
        if rejected_output.as_deref() == Some("") {
            return Err(Error::new(
                "rejected_output is empty: give the name of an output of the pipeline",
            ));
        }
        Ok(Enrich { rejected_output })
    }

    fn process<'a>(&mut self, msg: Message<'a>) -> Result<impl IntoOutputs<'a>, Error> {
        let mut out = Vec::with_capacity(msg.value.len() + 96);
        let status = enrich_json(&msg.value, &mut out).map_err(Error::from)?;
        let msg = msg.with_value(out);
        Ok(match (status, &self.rejected_output) {
            (Status::Rejected, Some(output)) => msg.to_output(output.clone()),
            _ => msg,
        })
    }
}

/// The rule as a function, for native callers (benches): [`Enrich`] without settings.
pub fn process(msg: Message<'_>) -> Result<Message<'_>, Error> {
    let mut out = Vec::with_capacity(msg.value.len() + 96);
    enrich_json(&msg.value, &mut out).map_err(Error::from)?;
    Ok(msg.with_value(out))
}
