//! Iceberg tables for tests: the REST catalog of the test S3 server (`scripts/s3.sh start`
//! serves it on the S3 port + 181, warehouse `warehouse`, credential admin:password), read back
//! with pyiceberg, not with our own code.
#![allow(dead_code)]

use std::process::Command;

use super::s3;

pub const WAREHOUSE: &str = "warehouse";
pub const CREDENTIAL: &str = "admin:password";

/// The catalog beside the shared test S3 server.
pub fn catalog() -> String {
    let s3 = s3::server();
    let (host, port) = s3.rsplit_once(':').expect("HOST:PORT");
    let port: u16 = port.parse().expect("port");
    format!("{host}:{}", port + 181)
}

/// `iceberg://CATALOG/NAMESPACE/TABLE?warehouse=warehouse&credential=...&PARAMS`
pub fn uri(catalog: &str, table: &str, params: &str) -> String {
    format!("iceberg://{catalog}/{table}?warehouse={WAREHOUSE}&credential={CREDENTIAL}&{params}")
}

/// What pyiceberg sees in a table: row and distinct `session_id` counts, columns, the data
/// files and the snapshots' Sluice properties.
/// The catalog the arguments name (`rest CATALOG TABLE S3` or `sqlite DB TABLE WAREHOUSE`)
/// as `c`, and the table as `t`: the start of every script here.
const CONNECT: &str = r#"
import json, sys
kind, where, table = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "rest":
    from pyiceberg.catalog.rest import RestCatalog
    s3 = sys.argv[4]
    c = RestCatalog("t", uri="http://" + where, warehouse="warehouse", credential="admin:password",
                    **{"s3.endpoint": "http://" + s3, "s3.access-key-id": "admin",
                       "s3.secret-access-key": "password", "s3.region": "us-east-1",
                       "s3.path-style-access": "true"})
else:
    from pyiceberg.catalog.sql import SqlCatalog
    c = SqlCatalog("sluice", uri="sqlite:///" + where, warehouse="file://" + sys.argv[4])
t = c.load_table(table)
"#;

const READ: &str = r#"
df = t.scan().to_arrow()
ids = df.column("session_id").to_pylist() if "session_id" in df.column_names else []
out = {
    "rows": df.num_rows,
    "distinct": len(set(ids)),
    "columns": df.column_names,
    "types": {f.name: str(f.field_type) for f in t.schema().fields},
    "files": [task.file.file_path for task in t.scan().plan_files()],
    "snapshots": [dict(s.summary.additional_properties) for s in t.snapshots()],
    "spec": str(t.spec()),
    "sample": json.loads(json.dumps(df.slice(0, 3).to_pylist(), default=str)),
}
print(json.dumps([out]))
"#;

/// The table through the REST catalog at `catalog`, its files on the S3 server `s3`.
pub fn read_rest(catalog: &str, s3: &str, table: &str) -> serde_json::Value {
    read(&["rest", catalog, table, s3])
}

/// The table through the embedded catalog `db`, its files under `warehouse`.
pub fn read_sqlite(db: &str, warehouse: &str, table: &str) -> serde_json::Value {
    read(&["sqlite", db, table, warehouse])
}

fn read(args: &[&str]) -> serde_json::Value {
    python(&format!("{CONNECT}{READ}"), args).unwrap_or_else(|e| panic!("pyiceberg: {e}"))
}

/// A rollup's table against an independent count: the sessions of a file (JSON lines with
/// `timestamp` in RFC 3339, `country`, `status`) counted per 60 s window, country and status,
/// and the table's `sessions` summed per the same. Keys that differ, by kind, first few each.
const ROLLUP: &str = r#"
import collections, datetime
want = collections.Counter()
for line in open(sys.argv[5]):
    s = json.loads(line)
    at = datetime.datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00"))
    start = datetime.datetime.fromtimestamp(int(at.timestamp()) // 60 * 60, datetime.timezone.utc)
    want[(start.strftime("%Y-%m-%dT%H:%M:%SZ"), s["country"], s["status"])] += 1
got = collections.Counter()
rows = t.scan().to_arrow().to_pylist()
for r in rows:
    got[(r["window_start"], r["country"], r["status"])] += r["sessions"]
print(json.dumps([{
    "expected": len(want),
    "rows": len(rows),
    "sessions": sum(got.values()),
    "missing": [list(k) for k in want if k not in got][:5],
    "wrong": [[*k, want[k], got[k]] for k in want if k in got and got[k] != want[k]][:5],
    "extra": [list(k) for k in got if k not in want][:5],
}]))
"#;

/// [`ROLLUP`] for the table through the REST catalog.
pub fn rollup_check(
    catalog: &str,
    s3: &str,
    table: &str,
    sessions: &std::path::Path,
) -> Result<serde_json::Value, String> {
    let file = sessions.to_str().expect("utf-8 path");
    python(
        &format!("{CONNECT}{ROLLUP}"),
        &["rest", catalog, table, s3, file],
    )
}

/// The stack's rollup table (embedded catalog) against the processed objects its progress
/// names done, counted per minute, country and status by pyarrow: each object is a lane whose
/// windows close at its end, so the table holds every session of those objects, and no other.
const STACK_ROLLUP: &str = r#"
import collections, datetime, os
import pyarrow.parquet as pq
bucket = sys.argv[5]
progress = os.path.join(bucket, "_sluice", "rollup.progress.json")
done = json.load(open(progress))["done"] if os.path.exists(progress) else []
want = collections.Counter()
for key in done:
    for s in pq.read_table(os.path.join(bucket, key)).to_pylist():
        at = datetime.datetime.strptime(s["timestamp"], "%Y-%m-%d %H:%M:%S%z")
        start = datetime.datetime.fromtimestamp(int(at.timestamp()) // 60 * 60, datetime.timezone.utc)
        want[(start.strftime("%Y-%m-%dT%H:%M:%SZ"), s["country"], s["status"])] += 1
got = collections.Counter()
for r in t.scan().to_arrow().to_pylist():
    got[(r["window_start"], r["country"], r["status"])] += r["sessions"]
print(json.dumps([{
    "objects": len(done),
    "expected": sum(want.values()),
    "sessions": sum(got.values()),
    "wrong": [[*k, want[k], got[k]] for k in set(want) | set(got) if got[k] != want[k]][:5],
}]))
"#;

pub fn stack_rollup_check(
    db: &str,
    warehouse: &str,
    table: &str,
    bucket: &std::path::Path,
) -> Result<serde_json::Value, String> {
    let bucket = bucket.to_str().expect("utf-8 path");
    python(
        &format!("{CONNECT}{STACK_ROLLUP}"),
        &["sqlite", db, table, warehouse, bucket],
    )
}

/// What a pyiceberg `script` prints (a JSON list of one value), or its stderr.
fn python(script: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new(s3::python())
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut list: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    list.pop()
        .ok_or_else(|| "the script printed no value".to_owned())
}

/// The current snapshot's `total-records`, without reading the data.
const COUNT: &str = r#"
s = t.current_snapshot()
print(json.dumps([{"rows": int(s.summary["total-records"]) if s else 0}]))
"#;

/// Rows pyiceberg sees now, or `None` while the table does not exist.
pub fn rows_rest(catalog: &str, s3: &str, table: &str) -> Option<u64> {
    python(&format!("{CONNECT}{COUNT}"), &["rest", catalog, table, s3]).ok()?["rows"].as_u64()
}
