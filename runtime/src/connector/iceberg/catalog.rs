//! Opening the catalog an Iceberg URI names: a REST catalog (OAuth2 client credentials or a
//! bearer token) or the embedded SQL catalog on SQLite; storage settings the URI gives win over
//! what the catalog vends. Commit conflicts are handed back to the sink unretried, because a
//! retry must recompute the source positions the commit carries.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use async_trait::async_trait;
use iceberg::io::{StorageConfig, StorageFactory};
use iceberg::table::Table;
use iceberg::{
    CatalogBuilder, ErrorKind, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

use super::uri::{Catalog, IcebergUri};
use crate::connector::{backoff, one_line};

/// The catalog name the embedded catalog's rows carry; pyiceberg opens it as
/// `SqlCatalog("sluice", uri="sqlite:///PATH", warehouse="file://DIR")`.
const EMBEDDED_CATALOG_NAME: &str = "sluice";

/// The catalog, with commit conflicts handed back unretried (see the module).
pub struct TableCatalog {
    inner: Arc<dyn iceberg::Catalog>,
    /// Pinned for one commit: the snapshot the commit was prepared on. iceberg reloads the
    /// table before committing and would silently re-apply the commit on a newer snapshot;
    /// here that is a conflict, since the positions it carries were merged from this one.
    base: Option<Option<i64>>,
}

impl fmt::Debug for TableCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TableCatalog")
    }
}

/// Opens the catalog; fails with the URI and the fix when it cannot be reached or refuses the
/// credentials.
pub async fn open(uri: &IcebergUri) -> Result<Arc<TableCatalog>> {
    crate::connector::install_tls_provider();
    let storage = Arc::new(Overrides {
        inner: OpenDalResolvingStorageFactory::new(),
        overrides: storage_overrides(uri),
        defaults: storage_defaults(uri),
    });
    let inner: Arc<dyn iceberg::Catalog> = match &uri.catalog {
        Catalog::Rest {
            base,
            warehouse,
            credential,
            token,
        } => {
            let mut props = HashMap::from([
                ("uri".to_owned(), base.clone()),
                ("warehouse".to_owned(), warehouse.clone()),
            ]);
            if let Some(c) = credential {
                props.insert("credential".into(), c.clone());
                props.insert("scope".into(), "catalog".into());
            }
            if let Some(t) = token {
                props.insert("token".into(), t.clone());
            }
            let catalog = RestCatalogBuilder::default()
                .with_storage_factory(storage)
                .load("sluice", props)
                .await
                .map_err(|e| anyhow!("{}: {}", uri.display, one_line(&e)))?;
            Arc::new(catalog)
        }
        Catalog::Sqlite { db, warehouse } => {
            if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("{}: cannot create {}", uri.display, dir.display()))?;
            }
            std::fs::create_dir_all(warehouse).with_context(|| {
                format!(
                    "{}: cannot create the warehouse {}",
                    uri.display,
                    warehouse.display()
                )
            })?;
            let warehouse = std::fs::canonicalize(warehouse)?;
            let catalog = SqlCatalogBuilder::default()
                .uri(format!("sqlite:{}?mode=rwc", db.display()))
                .warehouse_location(format!("file://{}", warehouse.display()))
                .sql_bind_style(SqlBindStyle::QMark)
                .with_storage_factory(storage)
                .load(EMBEDDED_CATALOG_NAME, HashMap::new())
                .await
                .map_err(|e| {
                    anyhow!(
                        "{}: cannot open the catalog {}: {}",
                        uri.display,
                        db.display(),
                        one_line(&e)
                    )
                })?;
            Arc::new(catalog)
        }
    };
    Ok(Arc::new(TableCatalog { inner, base: None }))
}

/// Settings the URI gives, which win over the catalog's.
fn storage_overrides(uri: &IcebergUri) -> HashMap<String, String> {
    let mut props = HashMap::new();
    if let Some(e) = &uri.s3_endpoint {
        props.insert("s3.endpoint".into(), e.clone());
    }
    if let Some(r) = &uri.region {
        props.insert("s3.region".into(), r.clone());
    }
    props
}

/// Settings used where the catalog vends none: credentials from the environment as for
/// `s3://`, path-style addressing (virtual hosts fail against MinIO-like servers on an IP).
fn storage_defaults(uri: &IcebergUri) -> HashMap<String, String> {
    let mut props = HashMap::from([
        ("s3.path-style-access".to_owned(), "true".to_owned()),
        ("s3.region".to_owned(), "us-east-1".to_owned()),
    ]);
    if let (Some(id), Some(secret)) = (&uri.access_key_id, &uri.secret_access_key) {
        props.insert("s3.access-key-id".into(), id.clone());
        props.insert("s3.secret-access-key".into(), secret.clone());
    }
    props
}

/// The opendal storage of the iceberg crates, with the URI's settings applied on top of the
/// catalog's vended ones. Serialisable as iceberg's storage factories are (the credentials
/// must travel with it); its `Debug` form hides them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Overrides {
    inner: OpenDalResolvingStorageFactory,
    overrides: HashMap<String, String>,
    defaults: HashMap<String, String>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("overrides", &redacted(&self.overrides))
            .field("defaults", &redacted(&self.defaults))
            .finish_non_exhaustive()
    }
}

/// Storage settings with the values of credentials replaced, for logs and errors.
fn redacted(props: &HashMap<String, String>) -> std::collections::BTreeMap<&str, &str> {
    props
        .iter()
        .map(|(k, v)| {
            let secret = ["secret", "token", "key-id", "password", "credential"]
                .iter()
                .any(|s| k.contains(s));
            (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
        })
        .collect()
}

#[typetag::serde]
impl StorageFactory for Overrides {
    fn build(&self, config: &StorageConfig) -> iceberg::Result<Arc<dyn iceberg::io::Storage>> {
        let mut props = self.defaults.clone();
        props.extend(config.props().clone());
        props.extend(self.overrides.clone());
        self.inner.build(&StorageConfig::from_props(props))
    }
}

impl TableCatalog {
    /// The catalog for committing a transaction prepared on the snapshot `base` (`None`: an
    /// empty table): if the table moved on since, the commit fails as a conflict.
    pub fn pinned(&self, base: Option<i64>) -> TableCatalog {
        TableCatalog {
            inner: self.inner.clone(),
            base: Some(base),
        }
    }

    /// The table, or `None` if it does not exist; an error names what to check.
    pub async fn load(&self, ident: &TableIdent) -> Result<Option<Table>> {
        match self.inner.load_table(ident).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(anyhow!("loading the table `{ident}`: {}", explain(&e))),
        }
    }

    /// Loads the table, creating its namespace and the table (from `creation`) when missing.
    pub async fn load_or_create(
        &self,
        ident: &TableIdent,
        creation: impl FnOnce() -> Result<TableCreation>,
    ) -> Result<(Table, bool)> {
        if let Some(t) = self.load(ident).await? {
            return Ok((t, false));
        }
        let ns = ident.namespace();
        self.create_namespace_once(ns).await?;
        match self.inner.create_table(ns, creation()?).await {
            Ok(t) => Ok((t, true)),
            // Another process created it first.
            Err(e) if e.kind() == ErrorKind::TableAlreadyExists => Ok((
                self.inner
                    .load_table(ident)
                    .await
                    .map_err(|e| anyhow!(one_line(&e)))?,
                false,
            )),
            Err(e) => Err(anyhow!("cannot create the table: {}", one_line(&e))),
        }
    }
}

impl TableCatalog {
    /// Creates the namespace unless it exists. A catalog may fail a creation that races
    /// another process's (SeaweedFS answers 500): if the namespace is there then, that is
    /// success; otherwise it is tried again a few times.
    async fn create_namespace_once(&self, ns: &NamespaceIdent) -> Result<()> {
        let mut delays = backoff::delays(Duration::from_millis(100), Duration::from_secs(2));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = match self.inner.create_namespace(ns, HashMap::new()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NamespaceAlreadyExists => return Ok(()),
                Err(e) => e,
            };
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(2))).await;
            if self.inner.namespace_exists(ns).await.unwrap_or(false) {
                return Ok(());
            }
            if attempt == 4 {
                bail!(
                    "cannot create the namespace `{}`: {}",
                    ns.join("."),
                    one_line(&e)
                );
            }
        }
    }
}

fn is_missing(e: &iceberg::Error) -> bool {
    matches!(e.kind(), ErrorKind::TableNotFound | ErrorKind::NamespaceNotFound)
        // The SQL catalog reports a missing table as "unexpected".
        || e.to_string().contains("No such table")
}

/// The error with what to check: iceberg's messages name the HTTP failure, not the setting.
fn explain(e: &iceberg::Error) -> String {
    let text = one_line(e);
    let hint = if text.contains("error sending request") || text.contains("onnection refused") {
        "the catalog does not answer: start it or fix HOST:PORT (and tls=)"
    } else if text.contains("401")
        || text.contains("403")
        || text.contains("nauthorized")
        || text.contains("token")
    {
        "the catalog refused the credentials: check credential=ID:SECRET (or SLUICE_ICEBERG_CREDENTIAL) or token="
    } else if text.contains("arehouse") || text.contains("404") {
        "check warehouse= names a warehouse of this catalog"
    } else {
        return text;
    };
    format!("{hint} ({text})")
}

/// Whether a commit failed because another writer committed first.
pub fn is_conflict(e: &iceberg::Error) -> bool {
    e.kind() == ErrorKind::CatalogCommitConflicts
}

#[async_trait]
impl iceberg::Catalog for TableCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        let loaded = self.inner.load_table(table).await?;
        match self.base {
            Some(base)
                if loaded
                    .metadata()
                    .current_snapshot()
                    .map(|s| s.snapshot_id())
                    != base =>
            {
                Err(iceberg::Error::new(
                    ErrorKind::CatalogCommitConflicts,
                    "another writer committed since this commit was prepared",
                ))
            }
            _ => Ok(loaded),
        }
    }
    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    /// A conflict is returned as not retryable: iceberg would re-apply the same snapshot
    /// summary, whose positions are stale once another writer committed.
    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        self.inner.update_table(commit).await.map_err(|e| {
            if is_conflict(&e) {
                e.with_retryable(false)
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_settings_show_no_credentials() {
        let overrides = Overrides {
            inner: OpenDalResolvingStorageFactory::new(),
            overrides: HashMap::from([("s3.endpoint".into(), "http://127.0.0.1:9000".into())]),
            defaults: HashMap::from([
                ("s3.access-key-id".into(), "AKIDSHOWN".into()),
                ("s3.secret-access-key".into(), "SECRETSHOWN".into()),
                ("s3.session-token".into(), "TOKENSHOWN".into()),
            ]),
        };
        let shown = format!("{overrides:?}");
        assert!(shown.contains("http://127.0.0.1:9000"), "{shown}");
        for secret in ["AKIDSHOWN", "SECRETSHOWN", "TOKENSHOWN"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
