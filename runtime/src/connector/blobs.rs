//! Where a stateful pipeline keeps its checkpoints: named byte blobs under a root, in an object
//! store (`s3://` or `file://`, through opendal) or beside a table's data (through the table's
//! own file IO, so the catalog's storage settings apply).

use std::sync::Arc;

use anyhow::{anyhow, Result};
use async_trait::async_trait;
use bytes::Bytes;

use super::object::ObjectUri;
use super::one_line;
use crate::context::Context;

/// Blobs under one root; names are relative `a/b/c` paths.
#[async_trait]
pub trait Blobs: Send + Sync {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()>;
    /// `None` when the blob does not exist.
    async fn get(&self, name: &str) -> Result<Option<Bytes>>;
    async fn delete(&self, name: &str) -> Result<()>;
    /// For messages: where the blobs are.
    fn describe(&self) -> String;
}

/// Blobs in an object store or a local directory: `--checkpoints s3://BUCKET/PREFIX?...` or
/// `file://DIR`.
pub async fn open(uri: &str, ctx: &Context) -> Result<Arc<dyn Blobs>> {
    let parsed = ObjectUri::parse(uri)?;
    let op = parsed.open(ctx).await?;
    Ok(Arc::new(ObjectBlobs {
        op,
        prefix: parsed.prefix.clone(),
        display: parsed.display.clone(),
    }))
}

/// Blobs under `prefix` of an opened store (an object sink's: `PREFIX/_sluice/state/`).
pub fn in_store(op: opendal::Operator, prefix: String, display: String) -> Arc<dyn Blobs> {
    Arc::new(ObjectBlobs {
        op,
        prefix,
        display,
    })
}

struct ObjectBlobs {
    op: opendal::Operator,
    prefix: String,
    display: String,
}

#[async_trait]
impl Blobs for ObjectBlobs {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let key = format!("{}{name}", self.prefix);
        self.op
            .write(&key, bytes)
            .await
            .map(drop)
            .map_err(|e| anyhow!("{}: cannot write {key}: {}", self.display, one_line(&e)))
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let key = format!("{}{name}", self.prefix);
        match self.op.read(&key).await {
            Ok(b) => Ok(Some(b.to_bytes())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!(
                "{}: cannot read {key}: {}",
                self.display,
                one_line(&e)
            )),
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let key = format!("{}{name}", self.prefix);
        self.op
            .delete(&key)
            .await
            .map_err(|e| anyhow!("{}: cannot delete {key}: {}", self.display, one_line(&e)))
    }

    fn describe(&self) -> String {
        self.display.clone()
    }
}

/// Blobs under `root` (a table location's folder), through a table's file IO.
pub struct TableBlobs {
    pub io: iceberg::io::FileIO,
    pub root: String,
}

#[async_trait]
impl Blobs for TableBlobs {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = format!("{}/{name}", self.root);
        let out = self
            .io
            .new_output(&path)
            .map_err(|e| anyhow!("{path}: {}", one_line(&e)))?;
        out.write(bytes)
            .await
            .map_err(|e| anyhow!("cannot write {path}: {}", one_line(&e)))
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = format!("{}/{name}", self.root);
        let input = self
            .io
            .new_input(&path)
            .map_err(|e| anyhow!("{path}: {}", one_line(&e)))?;
        if !input
            .exists()
            .await
            .map_err(|e| anyhow!("cannot look for {path}: {}", one_line(&e)))?
        {
            return Ok(None);
        }
        input
            .read()
            .await
            .map(Some)
            .map_err(|e| anyhow!("cannot read {path}: {}", one_line(&e)))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let path = format!("{}/{name}", self.root);
        self.io
            .delete(&path)
            .await
            .map_err(|e| anyhow!("cannot delete {path}: {}", one_line(&e)))
    }

    fn describe(&self) -> String {
        self.root.clone()
    }
}
