//! Event times as sessions carry them, and window bounds as RFC 3339 text: no date crate in
//! the plugin, just the civil-calendar arithmetic (Howard Hinnant's days-from-civil).

/// Milliseconds since the epoch from a timestamp field: a number (seconds, or milliseconds
/// when past year 5138 in seconds), or text `YYYY-MM-DD[T ]HH:MM:SS[.fff][Z|±HH:MM|±HHMM]`
/// (enrich writes `2026-11-25 17:03:31+0000`).
pub fn parse_ms(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => {
            let secs = n.as_f64()?;
            if !secs.is_finite() {
                return None;
            }
            Some(if secs.abs() >= 1e11 {
                secs as i64
            } else {
                (secs * 1000.0) as i64
            })
        }
        serde_json::Value::String(s) => parse_text(s),
        _ => None,
    }
}

fn parse_text(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(range)?).ok()?.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let digits = &s[start..at.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_min = match &s[at..] {
        "" | "Z" | "z" => 0,
        rest => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 {
                return None;
            }
            sign * (digits[..2].parse::<i64>().ok()? * 60 + digits[2..].parse::<i64>().ok()?)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (milliseconds when there are any).
pub fn format_ms(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    if millis == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{millis:03}Z")
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_as_enrich_writes_them_and_as_rfc_3339_and_numbers() {
        let at = 1_764_090_211_000; // 2025-11-25T17:03:31Z
        for v in [
            json!("2025-11-25 17:03:31+0000"),
            json!("2025-11-25T17:03:31Z"),
            json!("2025-11-25T18:03:31+01:00"),
            json!(1_764_090_211),
            json!(1_764_090_211_000_i64),
        ] {
            assert_eq!(parse_ms(&v), Some(at), "{v}");
        }
        assert_eq!(parse_ms(&json!("2025-11-25T17:03:31.250Z")), Some(at + 250));
        for bad in [
            json!("yesterday"),
            json!("2025-13-01T00:00:00Z"),
            json!(null),
            json!(true),
        ] {
            assert_eq!(parse_ms(&bad), None, "{bad}");
        }
    }

    #[test]
    fn window_bounds_format_as_rfc_3339() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1_764_090_180_000), "2025-11-25T17:03:00Z");
        assert_eq!(format_ms(951_782_400_500), "2000-02-29T00:00:00.500Z");
        assert_eq!(format_ms(-1000), "1969-12-31T23:59:59Z");
        for ms in [0, 1_764_090_180_000, -86_400_000 * 365, 253_402_300_799_000] {
            assert_eq!(parse_ms(&json!(format_ms(ms))), Some(ms));
        }
    }
}
