//! The query string of every endpoint URI: `NAME=VALUE` pairs, percent-decoded, taken one by
//! one by the connector that knows them; whatever is left is reported as unknown, so a typo is
//! an error instead of a silently ignored setting.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};

/// A URI split at `?`, with its parameters still to be taken.
pub struct Query<'a> {
    uri: &'a str,
    /// What the connector expects, appended to every error (e.g. the URI's form).
    usage: &'static str,
    params: Vec<(String, String)>,
}

impl<'a> Query<'a> {
    /// Splits `uri` into what comes before `?` and its parameters.
    pub fn parse(uri: &'a str, usage: &'static str) -> Result<(&'a str, Query<'a>)> {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                bail!("`{uri}`: `{pair}` is not NAME=VALUE; {usage}");
            };
            params.push((percent_decode(k), percent_decode(v)));
        }
        Ok((path, Query { uri, usage, params }))
    }

    /// An error about this URI, with the connector's usage.
    pub fn error(&self, why: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("`{}`: {why}; {}", self.uri, self.usage)
    }

    /// The value of `key` (the last one if repeated).
    pub fn take(&mut self, key: &str) -> Option<String> {
        let mut found = None;
        self.params.retain(|(k, v)| {
            if k == key {
                found = Some(v.clone());
            }
            k != key
        });
        found
    }

    /// Every `PREFIXNAME=VALUE` as (NAME, VALUE), in order (e.g. `prop.` for client settings).
    pub fn take_prefixed(&mut self, prefix: &str) -> Result<Vec<(String, String)>> {
        let (taken, rest) = std::mem::take(&mut self.params)
            .into_iter()
            .partition(|(k, _)| k.starts_with(prefix));
        self.params = rest;
        taken
            .into_iter()
            .map(|(k, v): (String, String)| match &k[prefix.len()..] {
                "" => Err(self.error(format!("`{k}` names no setting: use {prefix}NAME=VALUE"))),
                name => Ok((name.to_owned(), v)),
            })
            .collect()
    }

    /// `key` as a duration (`10s`, `500ms`, `2m`, `1h`; a bare number is seconds).
    pub fn duration(&mut self, key: &str, default: Duration) -> Result<Duration> {
        self.take(key).map_or(Ok(default), |v| {
            parse_duration(&v).ok_or_else(|| {
                self.error(format!(
                    "{key}={v} is not a duration of at most 100 years: use e.g. {key}=10s, {key}=500ms or {key}=2m"
                ))
            })
        })
    }

    /// `key` as a positive count or size (`10000`, `10k`, `1M`, `512KiB`, `64MiB`, `1GiB`).
    pub fn size(&mut self, key: &str, default: usize) -> Result<usize> {
        self.take(key).map_or(Ok(default), |v| {
            parse_size(&v).filter(|n| *n > 0).ok_or_else(|| {
                self.error(format!(
                    "{key}={v} is not a positive number (e.g. {key}=10000 or {key}=64MiB)"
                ))
            })
        })
    }

    /// `key` as `true` or `false`; `meaning` says what each does, for the error.
    pub fn flag(&mut self, key: &str, default: bool, meaning: &str) -> Result<bool> {
        match self.take(key).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(self.error(format!("{key}={v}: use {meaning}"))),
        }
    }

    /// Fails on the first parameter nobody took, listing the `known` ones.
    pub fn finish(self, known: &str) -> Result<()> {
        match self.params.first() {
            Some((k, _)) => Err(self.error(format!("unknown parameter `{k}` (known: {known})"))),
            None => Ok(()),
        }
    }
}

/// `%XX` escapes decoded; anything else (including a stray `%`) kept as it is.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `10s`, `500ms`, `2m`, `1h 30m` (humantime's units); a bare number is seconds (`1.5`).
/// `None` for anything else, and for durations past what a timer can hold.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(secs) if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| *d <= MAX_DURATION)
        }
        _ => humantime::parse_duration(s)
            .ok()
            .filter(|d| *d <= MAX_DURATION),
    }
}

/// The longest duration a URI may give: 100 years (tokio's timers take no more than ~2 years
/// of sleep at once, but a setting beyond a century is a typo, not a wish).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `10000`, `64MiB`, `512KiB`, `1GiB`, `10k`, `1M`.
pub fn parse_size(s: &str) -> Option<usize> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    let m = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_taken_decoded_and_leftovers_reported() {
        let uri = "x://h/p?a=1&b=x%2Fy&prop.c.d=3&roll=2m&n=64MiB&f=true&zz=1";
        let (path, mut q) = Query::parse(uri, "use x://H/P").unwrap();
        assert_eq!(path, "x://h/p");
        assert_eq!(q.take("a").as_deref(), Some("1"));
        assert_eq!(q.take("a"), None);
        assert_eq!(q.take("b").as_deref(), Some("x/y"));
        assert_eq!(
            q.take_prefixed("prop.").unwrap(),
            [("c.d".to_owned(), "3".to_owned())]
        );
        assert_eq!(
            q.duration("roll", Duration::ZERO).unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(q.size("n", 1).unwrap(), 64 << 20);
        assert!(q.flag("f", false, "f=true or f=false").unwrap());
        let e = q.finish("a, b").unwrap_err().to_string();
        assert!(
            e.contains(uri) && e.contains("unknown parameter `zz` (known: a, b)"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_parameter_and_the_fix() {
        let bad = |uri: &str, f: fn(&mut Query) -> Result<()>| {
            let (_, mut q) = Query::parse(uri, "usage").unwrap();
            f(&mut q).unwrap_err().to_string()
        };
        let e = bad("x://h?roll=soon", |q| {
            q.duration("roll", Duration::ZERO).map(drop)
        });
        assert!(e.contains("roll=soon is not a duration"), "{e}");
        let e = bad("x://h?n=0", |q| q.size("n", 1).map(drop));
        assert!(e.contains("n=0 is not a positive number"), "{e}");
        let e = bad("x://h?f=yes", |q| q.flag("f", true, "f=true").map(drop));
        assert!(e.contains("f=yes: use f=true"), "{e}");
        let e = bad("x://h?prop.=1", |q| q.take_prefixed("prop.").map(drop));
        assert!(e.contains("names no setting"), "{e}");
        let e = Query::parse("x://h?group", "usage")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`group` is not NAME=VALUE; usage"), "{e}");
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        // Past any timer: an error naming the range, not a panic.
        for huge in [
            "99999999999999999999999999999h",
            "1e300",
            "9999999999999999999999",
        ] {
            assert_eq!(parse_duration(huge), None, "{huge}");
        }
        let e = bad("x://h?commit=99999999999999999999999h", |q| {
            q.duration("commit", Duration::ZERO).map(drop)
        });
        assert!(e.contains("at most 100 years"), "{e}");
        assert_eq!(parse_size("10k"), Some(10_000));
        assert_eq!(parse_size("1x"), None);
        assert_eq!(percent_decode("a%2Fb%3d%zz"), "a/b=%zz");
    }
}
