//! `iceberg://HOST:PORT/NAMESPACE/TABLE?warehouse=W` (a REST catalog) and
//! `iceberg+sqlite://PATH/catalog.db/NAMESPACE/TABLE?warehouse=DIR` (the embedded catalog),
//! parsed, with errors that name the URI and the fix.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::connector::uri::Query;

/// Which catalog keeps the table.
#[derive(Debug, Clone)]
pub enum Catalog {
    /// An Iceberg REST catalog at `base` (`http://HOST:PORT`).
    Rest {
        base: String,
        warehouse: String,
        /// OAuth2 client credentials `ID:SECRET`, exchanged for a token at the catalog.
        credential: Option<String>,
        token: Option<String>,
    },
    /// iceberg's SQL catalog on a SQLite file, with the table files under `warehouse`.
    Sqlite { db: PathBuf, warehouse: PathBuf },
}

/// A table sink's URI, parsed.
#[derive(Debug, Clone)]
pub struct IcebergUri {
    /// The URI as given, without secrets, for messages.
    pub display: String,
    pub catalog: Catalog,
    /// Namespace levels (`a.b` is the namespace `b` inside `a`).
    pub namespace: Vec<String>,
    pub table: String,
    /// Storage settings that win over what the catalog vends.
    pub s3_endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Commit what was written after this long, or once this many records are pending.
    pub commit_every: Duration,
    pub commit_records: Option<usize>,
    /// Data files roll at this size.
    pub target_file_size: usize,
    /// Bytes of records held for commits not landed yet (pending and committing) before
    /// writers wait: the bound on memory during a catalog or store outage.
    pub max_pending: usize,
    /// Partition fields for a table this sink creates: `day(timestamp)`, `country`, `bucket[16](id)`.
    pub partition: Vec<String>,
    /// Example records (JSON lines) to take a new table's columns from, instead of the first batch.
    pub schema: Option<PathBuf>,
    /// Add new fields as nullable columns instead of refusing the records that carry them.
    pub evolve: bool,
}

const USAGE: &str = "use iceberg://HOST:PORT/NAMESPACE/TABLE?warehouse=NAME (a REST catalog) or \
                     iceberg+sqlite://PATH/catalog.db/NAMESPACE/TABLE?warehouse=DIR (embedded)";
const KNOWN: &str = "warehouse, credential, token, tls, s3_endpoint, region, commit, \
                     commit_records, target_file_size, max_pending, partition, schema, evolve";

impl IcebergUri {
    pub fn parse(uri: &str) -> Result<Self> {
        let (path, mut query) = Query::parse(uri, USAGE)?;
        let Some((scheme, rest)) = path.split_once("://") else {
            bail!("`{uri}` is not an Iceberg table URI: {USAGE}");
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let warehouse = query.take("warehouse");
        let (catalog, table_path, display) = match scheme {
            "iceberg" => {
                let (host, table_path) = rest.split_once('/').unwrap_or((rest, ""));
                if host.is_empty() {
                    bail!("`{uri}` names no catalog host: {USAGE}");
                }
                let tls = query.flag("tls", false, "tls=true for https, tls=false for http")?;
                let Some(warehouse) = warehouse else {
                    return Err(query.error(
                        "no warehouse: add ?warehouse=NAME (the catalog's warehouse, e.g. a table bucket)",
                    ));
                };
                let credential = query
                    .take("credential")
                    .or_else(|| env("SLUICE_ICEBERG_CREDENTIAL"));
                if credential.as_ref().is_some_and(|c| !c.contains(':')) {
                    return Err(query.error("credential= must be CLIENT_ID:SECRET"));
                }
                let token = query.take("token");
                let base = format!("{}://{host}", if tls { "https" } else { "http" });
                let display = format!("iceberg://{host}/{table_path}");
                let catalog = Catalog::Rest {
                    base,
                    warehouse,
                    credential,
                    token,
                };
                (catalog, table_path, display)
            }
            "iceberg+sqlite" => {
                let Some(at) = rest.find(".db/") else {
                    bail!("`{uri}`: the catalog file must end in .db and be followed by /NAMESPACE/TABLE; {USAGE}");
                };
                let (db, table_path) = (&rest[..at + 3], &rest[at + 4..]);
                let Some(warehouse) = warehouse else {
                    return Err(query.error(
                        "no warehouse: add ?warehouse=DIR (the directory the table files go to)",
                    ));
                };
                let catalog = Catalog::Sqlite {
                    db: PathBuf::from(db),
                    warehouse: PathBuf::from(warehouse),
                };
                (catalog, table_path, path.to_owned())
            }
            _ => bail!("`{uri}` is not an Iceberg table URI: {USAGE}"),
        };
        let mut levels: Vec<&str> = table_path.split('/').filter(|s| !s.is_empty()).collect();
        if levels.len() != 2 {
            return Err(query.error(format!(
                "`{table_path}` is not NAMESPACE/TABLE (write nested namespaces as a.b)"
            )));
        }
        let table = levels.pop().unwrap_or_default().to_owned();
        let namespace: Vec<String> = levels[0].split('.').map(str::to_owned).collect();
        if namespace.iter().any(String::is_empty) {
            return Err(query.error(format!("`{}` is not a namespace", levels[0])));
        }
        let s3_endpoint = query.take("s3_endpoint");
        if let Some(e) = &s3_endpoint {
            if !e.starts_with("http://") && !e.starts_with("https://") {
                return Err(query.error(format!(
                    "s3_endpoint={e} must start with http:// or https://"
                )));
            }
        }
        let region = query.take("region");
        let commit_every = query.duration("commit", Duration::from_secs(10))?;
        if commit_every.is_zero() {
            return Err(query.error("commit=0 would commit every batch: use e.g. commit=1s"));
        }
        let commit_records = match query.take("commit_records") {
            None => None,
            Some(v) => match crate::connector::uri::parse_size(&v).filter(|n| *n > 0) {
                Some(n) => Some(n),
                None => {
                    return Err(query.error(format!("commit_records={v} is not a positive number")))
                }
            },
        };
        let target_file_size = query.size("target_file_size", 128 << 20)?;
        let max_pending = query.size("max_pending", 256 << 20)?;
        let partition = match query.take("partition") {
            None => Vec::new(),
            Some(p) => split_partition(&p),
        };
        let schema = query.take("schema").map(PathBuf::from);
        let evolve = query.flag(
            "evolve",
            false,
            "evolve=true to add new fields as columns, evolve=false to refuse records with unknown fields",
        )?;
        query.finish(KNOWN)?;
        Ok(IcebergUri {
            display,
            catalog,
            namespace,
            table,
            s3_endpoint,
            region,
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            commit_every,
            commit_records,
            target_file_size,
            max_pending,
            partition,
            schema,
            evolve,
        })
    }
}

/// `day(ts),bucket[16](id)` -> [`day(ts)`, `bucket[16](id)`]: commas inside parentheses or
/// brackets do not split.
fn split_partition(spec: &str) -> Vec<String> {
    let (mut out, mut depth, mut current) = (Vec::new(), 0i32, String::new());
    for c in spec.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current).trim().to_owned());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current.trim().to_owned());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_uris_parse() {
        let u = IcebergUri::parse(
            "iceberg://127.0.0.1:9181/analytics/sessions?warehouse=wh&credential=a:b&partition=day(timestamp),bucket[4](user_id)&commit=2s&commit_records=10k",
        )
        .unwrap();
        let Catalog::Rest {
            base,
            warehouse,
            credential,
            ..
        } = &u.catalog
        else {
            panic!("not REST")
        };
        assert_eq!(base, "http://127.0.0.1:9181");
        assert_eq!(warehouse, "wh");
        assert_eq!(credential.as_deref(), Some("a:b"));
        assert_eq!(u.namespace, ["analytics"]);
        assert_eq!(u.table, "sessions");
        assert_eq!(u.partition, ["day(timestamp)", "bucket[4](user_id)"]);
        assert_eq!(u.commit_every, Duration::from_secs(2));
        assert_eq!(u.commit_records, Some(10_000));
        assert!(!u.display.contains("a:b"), "secrets stay out of messages");
    }

    #[test]
    fn sqlite_uris_parse() {
        let u = IcebergUri::parse("iceberg+sqlite:///tmp/x/catalog.db/a.b/t?warehouse=/tmp/x/wh")
            .unwrap();
        let Catalog::Sqlite { db, warehouse } = &u.catalog else {
            panic!("not SQLite")
        };
        assert_eq!(db, &PathBuf::from("/tmp/x/catalog.db"));
        assert_eq!(warehouse, &PathBuf::from("/tmp/x/wh"));
        assert_eq!(u.namespace, ["a", "b"]);
    }

    #[test]
    fn bad_uris_name_the_fix() {
        for (uri, says) in [
            ("iceberg://h:1/ns/t", "add ?warehouse=NAME"),
            ("iceberg://h:1/t?warehouse=w", "is not NAMESPACE/TABLE"),
            (
                "iceberg://h:1/n/t?warehouse=w&credential=x",
                "CLIENT_ID:SECRET",
            ),
            (
                "iceberg://h:1/n/t?warehouse=w&commit=soon",
                "not a duration",
            ),
            (
                "iceberg://h:1/n/t?warehouse=w&colour=red",
                "unknown parameter `colour`",
            ),
            ("iceberg+sqlite://cat/n/t?warehouse=w", "must end in .db"),
            (
                "iceberg://h:1/n/t?warehouse=w&s3_endpoint=h:2",
                "must start with http",
            ),
        ] {
            let e = IcebergUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(says), "{uri}: {e}");
        }
    }
}
