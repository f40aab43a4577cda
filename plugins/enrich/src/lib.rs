//! Enrich user sessions, as the stack's Flink job did: add `country` and `country_code` looked up
//! from (latitude, longitude) rounded to 4 decimals, `status` ("accepted" for Greece, else
//! "rejected"), and render `timestamp` (epoch seconds) as `YYYY-MM-DD HH:MM:SS+0000`.
//!
//! Every other field is kept byte for byte: the record is scanned, not parsed into a tree, and
//! only the fields it needs are decoded. That is ~10x cheaper than a `serde_json::Value` round
//! trip.

mod json;
mod rule;

pub use rule::*;

// The export is a default feature so that other plugins (enrich-next) can use the rule as a
// library without exporting it twice.
#[cfg(feature = "export")]
sluice_sdk::transform!(Enrich);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use sluice_sdk::Message;

    fn enrich(v: &str) -> Result<Value, String> {
        let mut out = Vec::new();
        enrich_json(v.as_bytes(), &mut out)?;
        Ok(serde_json::from_slice(&out).expect("output is JSON"))
    }

    #[test]
    fn greece_is_accepted() {
        let out =
            enrich(r#"{"user_id":"u","latitude":39.0,"longitude":22.0,"timestamp":1700000000}"#)
                .unwrap();
        assert_eq!(
            out,
            json!({"user_id":"u","latitude":39.0,"longitude":22.0,"timestamp":"2023-11-14 22:13:20+0000",
                   "country":"Greece","country_code":"GR","status":"accepted"})
        );
    }

    #[test]
    fn every_table_entry_and_rounding() {
        for &((lat, lon), name, code) in &COUNTRIES {
            let (lat, lon) = (lat as f64 / 1e4, lon as f64 / 1e4);
            assert_eq!(country_at(lat, lon), (name, code));
            assert_eq!(country_at(lat + 0.00004, lon - 0.00004), (name, code));
        }
        assert_eq!(country_at(42.83334, 12.83326), ("Italy", "IT"));
        assert_eq!(country_at(39.0001, 22.0), ("Unknown", "Unknown"));
        let out = enrich(r#"{"latitude":0,"longitude":0,"timestamp":0}"#).unwrap();
        assert_eq!(out["country"], "Unknown");
        assert_eq!(out["status"], "rejected");
        assert_eq!(out["timestamp"], "1970-01-01 00:00:00+0000");
    }

    #[test]
    fn other_fields_are_kept_byte_for_byte() {
        let input = r#" { "a" : [1, {"b": "}\"x"}], "latitude": 52.5, "longitude": 5.75 ,"timestamp":951782400.9, "z": null } "#;
        let mut out = Vec::new();
        enrich_json(input.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with(r#" { "a" : [1, {"b": "}\"x"}], "latitude": 52.5, "longitude": 5.75 ,"timestamp":"2000-02-29 00:00:00+0000", "z": null"#), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["country"], "Netherlands");
    }

    /// A repeated key counts with its last value (as JSON parsers keep), and values are
    /// spliced in input order whatever the order of the keys enrich knows.
    #[test]
    fn repeated_and_reordered_keys() {
        let input =
            r#"{"status":1,"latitude":1,"timestamp":0,"longitude":22,"latitude":39,"status":2}"#;
        let mut out = Vec::new();
        enrich_json(input.as_bytes(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"status":1,"latitude":1,"timestamp":"1970-01-01 00:00:00+0000","longitude":22,"latitude":39,"status":"accepted","country":"Greece","country_code":"GR"}"#
        );
    }

    #[test]
    fn existing_output_fields_are_replaced_not_duplicated() {
        let out =
            enrich(r#"{"country":"x","latitude":39,"longitude":22,"status":1,"timestamp":86399}"#)
                .unwrap();
        assert_eq!(out["country"], "Greece");
        assert_eq!(out["status"], "accepted");
        assert_eq!(out["timestamp"], "1970-01-01 23:59:59+0000");
        assert_eq!(out.as_object().unwrap().len(), 6);
    }

    #[test]
    fn dates_before_1970_leap_years_and_the_range() {
        assert_eq!(&format_timestamp(-1), b"1969-12-31 23:59:59+0000");
        assert_eq!(
            &format_timestamp(1_709_164_800),
            b"2024-02-29 00:00:00+0000"
        );
        assert_eq!(
            &format_timestamp(*TIMESTAMPS.start()),
            b"0000-01-01 00:00:00+0000"
        );
        assert_eq!(
            &format_timestamp(*TIMESTAMPS.end()),
            b"9999-12-31 23:59:59+0000"
        );
        let err = enrich(r#"{"latitude":1,"longitude":1,"timestamp":253402300800}"#).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        assert!(enrich(r#"{"latitude":1,"longitude":1,"timestamp":-1e300}"#).is_err());
    }

    #[test]
    fn bad_records_get_clear_errors() {
        assert_eq!(
            enrich(r#"{"latitude":1,"timestamp":1}"#).unwrap_err(),
            "field `longitude` is missing"
        );
        assert_eq!(
            enrich(r#"{"latitude":"x","longitude":1,"timestamp":1}"#).unwrap_err(),
            "field `latitude` is not a number"
        );
        assert!(enrich("[1,2]").unwrap_err().contains("not a JSON object"));
        assert!(enrich(r#"{"latitude":1,"longitude":1,"timestamp":1"#)
            .unwrap_err()
            .contains("unterminated"));
        assert!(enrich(r#"{"a":[1}"#).is_err());
        assert!(enrich(r#"{"latitude":1,"longitude":1,"timestamp":1} x"#).is_err());
    }

    #[test]
    fn rejected_sessions_are_routed_when_asked() {
        use sluice_sdk::{Config, IntoOutputs, Transform};
        let greek = br#"{"latitude":39.0,"longitude":22.0,"timestamp":0}"#;
        let other = br#"{"latitude":0,"longitude":0,"timestamp":0}"#;
        let route = |settings: Vec<(String, String)>, v: &'static [u8]| {
            let mut e = Enrich::init(&Config::new(settings)).unwrap();
            let out = e.process(Message::new(v)).unwrap().into_messages();
            out[0].output.as_deref().map(str::to_owned)
        };
        let to = vec![("rejected_output".to_owned(), "rejected".to_owned())];
        assert_eq!(route(to.clone(), other), Some("rejected".to_owned()));
        assert_eq!(route(to, greek), None);
        assert_eq!(route(vec![], other), None);
        let empty = vec![("rejected_output".to_owned(), String::new())];
        assert!(Enrich::init(&Config::new(empty)).is_err());
    }

    #[test]
    fn process_keeps_key_and_headers() {
        let msg = Message::new(&br#"{"latitude":39,"longitude":22,"timestamp":0}"#[..])
            .with_key(&b"k"[..])
            .with_header("h", &b"v"[..])
            .with_timestamp_ms(5);
        let out = process(msg).unwrap();
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.header("h"), Some(&b"v"[..]));
        assert_eq!(out.timestamp_ms, Some(5));
    }
}
