//! Object-created events: S3 bucket notifications as MinIO (and AWS) send them, read by the
//! event-fed source and written, in MinIO's form, by the `list=events` lister.
//!
//! MinIO's Kafka target sends `{"EventName":"s3:ObjectCreated:Put","Key":"bucket/key",
//! "Records":[{"eventName":..., "s3":{"bucket":{"name":...},"object":{"key":URL-ENCODED,
//! "size":N,"eTag":...}}}]}` keyed by `bucket/key`; AWS sends `{"Records":[...]}` with
//! `ObjectCreated:Put` and an `s3:TestEvent` when notifications are set up.

use serde_json::{json, Value};

/// An object that was created (or overwritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub bucket: String,
    /// Decoded (events carry it URL-encoded).
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
}

/// What one notification says: the objects created, and how many other events (deletes,
/// test events) it carried.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notification {
    pub created: Vec<Created>,
    pub other: usize,
}

/// Parses a notification; `Err` says why it is not one (a malformed event).
pub fn parse(value: &[u8]) -> Result<Notification, String> {
    let doc: Value = serde_json::from_slice(value)
        .map_err(|e| format!("an object event must be an S3 bucket notification (JSON): {e}"))?;
    let Some(records) = doc.get("Records") else {
        // AWS's `s3:TestEvent` when a notification is configured: nothing was created.
        if doc.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
            return Ok(Notification {
                created: Vec::new(),
                other: 1,
            });
        }
        return Err(
            "an object event must be an S3 bucket notification with `Records` \
                    (MinIO's or S3's event format)"
                .into(),
        );
    };
    let records = records
        .as_array()
        .ok_or("`Records` of an object event must be a list")?;
    let mut out = Notification::default();
    for (i, r) in records.iter().enumerate() {
        let text = |path: &[&str]| {
            path.iter()
                .try_fold(r, |v, k| v.get(k))
                .and_then(Value::as_str)
        };
        let name = text(&["eventName"])
            .ok_or_else(|| format!("Records[{i}] of an object event has no eventName"))?;
        // `s3:ObjectCreated:Put` (MinIO), `ObjectCreated:CompleteMultipartUpload` (AWS).
        if !name.trim_start_matches("s3:").starts_with("ObjectCreated:") {
            out.other += 1;
            continue;
        }
        let bucket = text(&["s3", "bucket", "name"])
            .ok_or_else(|| format!("Records[{i}] ({name}) has no s3.bucket.name"))?;
        let key = text(&["s3", "object", "key"])
            .ok_or_else(|| format!("Records[{i}] ({name}) has no s3.object.key"))?;
        let object = &r["s3"]["object"];
        out.created.push(Created {
            bucket: bucket.to_owned(),
            key: decode_key(key),
            size: object.get("size").and_then(Value::as_u64),
            etag: object
                .get("eTag")
                .and_then(Value::as_str)
                .map(|e| e.trim_matches('"').to_owned()),
        });
    }
    Ok(out)
}

/// An object-created event in MinIO's form, and its record key `bucket/key`.
pub fn created(c: &Created, region: &str, time: &str) -> (String, String) {
    let event = json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": format!("{}/{}", c.bucket, c.key),
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "sluice:list",
            "awsRegion": region,
            "eventTime": time,
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": c.bucket, "arn": format!("arn:aws:s3:::{}", c.bucket)},
                "object": {"key": encode_key(&c.key), "size": c.size, "eTag": c.etag},
            },
        }],
    });
    (format!("{}/{}", c.bucket, c.key), event.to_string())
}

/// The events topic as a consumer-group URI: `events=kafka://HOST:PORT/TOPIC`, the object
/// URI's `group=`, and its `prop.NAME=VALUE`s as the consumer's settings.
pub(super) fn consumer_uri(
    events: &str,
    group: &str,
    query: &mut crate::connector::uri::Query<'_>,
) -> anyhow::Result<String> {
    if !events.starts_with("kafka://") {
        return Err(query.error(format!(
            "events={events}: give the events topic as events=kafka://HOST:PORT/TOPIC"
        )));
    }
    if events.contains('?') {
        return Err(query.error(format!(
            "events={events}: put the consumer's settings on the object URI as \
             prop.NAME=VALUE and its group as group=NAME"
        )));
    }
    // An event stands for a whole object: commit what is done often, so a member that dies
    // leaves little done-but-uncommitted work to be read again (prop. overrides it).
    let mut uri = format!("{events}?group={group}&prop.auto.commit.interval.ms=100");
    for (k, v) in query.take_prefixed("prop.")? {
        // Parsed again as a URI: keep a `%` or `&` in a value what it was.
        let v = v.replace('%', "%25").replace('&', "%26");
        uri.push_str(&format!("&prop.{k}={v}"));
    }
    crate::connector::kafka::KafkaUri::parse(&uri)?;
    Ok(uri)
}

/// Keys in events are query-escaped (`+` for a space, `%XX` for the rest).
fn decode_key(key: &str) -> String {
    crate::connector::uri::percent_decode(&key.replace('+', " "))
}

/// Query-escaped, as MinIO's events carry keys (`+` for a space, `%XX` for the rest).
fn encode_key(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification as MinIO's Kafka target sends it (trimmed of identity fields).
    const MINIO: &str = r#"{"EventName":"s3:ObjectCreated:Put","Key":"raw/in/2026/a b+c.parquet","Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2026-12-03T10:00:00.000Z","eventName":"s3:ObjectCreated:Put","userIdentity":{"principalId":"minio"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},"responseElements":{"x-amz-request-id":"1"},"s3":{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{"name":"raw","ownerIdentity":{"principalId":"minio"},"arn":"arn:aws:s3:::raw"},"object":{"key":"in%2F2026%2Fa+b%2Bc.parquet","size":1234,"eTag":"\"9b2cf535f27731c974343645a3985328\"","contentType":"application/octet-stream","userMetadata":{},"sequencer":"17F"}},"source":{"host":"127.0.0.1","port":"","userAgent":"MinIO"}}]}"#;

    #[test]
    fn minio_and_aws_notifications() {
        let n = parse(MINIO.as_bytes()).unwrap();
        assert_eq!(
            n.created,
            [Created {
                bucket: "raw".into(),
                key: "in/2026/a b+c.parquet".into(),
                size: Some(1234),
                etag: Some("9b2cf535f27731c974343645a3985328".into()),
            }]
        );
        let aws = r#"{"Records":[{"eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"bucket":{"name":"b"},"object":{"key":"k.parquet","size":5}}},{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k.parquet"}}}]}"#;
        let n = parse(aws.as_bytes()).unwrap();
        assert_eq!((n.created.len(), n.other), (1, 1));
        assert_eq!(n.created[0].etag, None);
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#;
        assert_eq!(parse(test.as_bytes()).unwrap().other, 1);
    }

    #[test]
    fn malformed_events_say_what_is_missing() {
        for (event, why) in [
            ("not json", "must be an S3 bucket notification (JSON)"),
            (r#"{"hello":1}"#, "with `Records`"),
            (r#"{"Records":{}}"#, "must be a list"),
            (r#"{"Records":[{}]}"#, "has no eventName"),
            (
                r#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"b"}}}]}"#,
                "has no s3.object.key",
            ),
        ] {
            let e = parse(event.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{event}: {e}");
        }
    }

    #[test]
    fn what_the_lister_writes_reads_back() {
        let c = Created {
            bucket: "raw".into(),
            key: "in/2026/a b+c%.parquet".into(),
            size: Some(7),
            etag: Some("abc".into()),
        };
        let (key, value) = created(&c, "us-east-1", "2026-12-03T10:00:00Z");
        assert_eq!(key, "raw/in/2026/a b+c%.parquet");
        assert!(
            value.contains(r#""key":"in%2F2026%2Fa+b%2Bc%25.parquet""#),
            "{value}"
        );
        assert_eq!(parse(value.as_bytes()).unwrap().created, [c]);
    }
}
