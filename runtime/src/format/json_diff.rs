//! JSON-aware comparison with readable differences: `runtime test`'s golden cases and shadow
//! runs compare outputs with it.

use serde_json::Value;

/// At most this many lines of JSON differences per record.
pub const MAX_DIFF_LINES: usize = 8;

/// Walks two JSON values; numbers are equal when their values are (39 == 39.0); object key
/// order does not matter.
pub fn json_diff(path: &str, want: &Value, got: &Value, diff: &mut Vec<String>) {
    if diff.len() >= MAX_DIFF_LINES {
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => json_diff(&p, wv, gv, diff),
                    None => diff.push(format!("{p}: expected {wv}, missing")),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) && diff.len() < MAX_DIFF_LINES {
                    diff.push(format!("{path}.{k}: not expected, got {gv}"));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                diff.push(format!(
                    "{path}: expected {} element(s), got {}",
                    w.len(),
                    g.len()
                ));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                json_diff(&format!("{path}[{i}]"), wv, gv, diff);
            }
        }
        (Value::Number(w), Value::Number(g)) => {
            let same = match (w.as_i64(), g.as_i64()) {
                (Some(a), Some(b)) => a == b,
                _ => w.as_f64() == g.as_f64(),
            };
            if !same {
                diff.push(format!("{path}: expected {w}, got {g}"));
            }
        }
        (w, g) if w == g => {}
        (w, g) => diff.push(format!("{path}: expected {w}, got {g}")),
    }
}
