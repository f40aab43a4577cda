//! Opening a table sink's table: loaded, or created from `schema=` examples or the first
//! batch's columns, checked against the sink's `partition=` and examples, and its positions
//! taken up.

use anyhow::{anyhow, Result};
use iceberg::table::Table;

use super::positions;
use super::sink::Shared;
use super::table;
use crate::format::parquet::ColumnEncoder;
use crate::sync::Locked;

impl Shared {
    /// Loads the table (creating it at once when `schema=` gives its columns) and its positions.
    pub(super) async fn open_table(&self) -> Result<()> {
        let display = &self.uri.display;
        let table = match self
            .catalog
            .load(&self.ident)
            .await
            .map_err(|e| anyhow!("{display}: {e}"))?
        {
            Some(t) => Some(t),
            None => match &self.examples.as_ref().and_then(|e| e.schema().cloned()) {
                Some(columns) => Some(self.create(columns).await?),
                // Created from the first batch's columns.
                None => None,
            },
        };
        if let Some(table) = table {
            self.check_partition(&table)?;
            if let Some(examples) = &self.examples {
                check_examples(&table, examples).map_err(|e| anyhow!("{display}: {e}"))?;
            }
            let held = self.take_positions(&table)?;
            tracing::info!(table = %self.uri.display, lanes = held, "table opened");
            let mut state = self.state.lock().await;
            state.encoder = Some(ColumnEncoder::with_schema(table::arrow_schema(&table)?));
            state.table = Some(table);
        }
        Ok(())
    }

    pub(super) async fn create(&self, columns: &arrow_schema::Schema) -> Result<Table> {
        let display = &self.uri.display;
        let creation = table::creation(&self.uri.table, columns, &self.partition)
            .map_err(|e| anyhow!("{display}: {e}"))?;
        let (table, created) = self
            .catalog
            .load_or_create(&self.ident, || Ok(creation))
            .await
            .map_err(|e| anyhow!("{display}: {e}"))?;
        if created {
            let columns: Vec<String> = table
                .metadata()
                .current_schema()
                .as_struct()
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name, f.field_type))
                .collect();
            tracing::info!(table = %self.uri.display, columns = %columns.join(", "), "table created");
        }
        Ok(table)
    }

    /// Merges the positions `table` holds for this writer into what is passed over; returns how
    /// many lanes it holds.
    pub(super) fn take_positions(&self, table: &Table) -> Result<usize> {
        let held = positions::in_table(&table.metadata_ref(), &self.writer)?;
        self.committed.locked().merge(&held);
        Ok(held.len())
    }

    /// A `partition=` that differs from the existing table's spec is refused, not ignored.
    pub(super) fn check_partition(&self, table: &Table) -> Result<()> {
        if self.partition.is_empty() {
            return Ok(());
        }
        let spec = table.metadata().default_partition_spec();
        let schema = table.metadata().current_schema();
        let have: Vec<String> = spec
            .fields()
            .iter()
            .map(|f| {
                let source = schema.name_by_field_id(f.source_id).unwrap_or("?");
                format!("{}({source})", f.transform)
            })
            .collect();
        let want: Vec<String> = self
            .partition
            .iter()
            .map(|p| format!("{}({})", p.transform, p.source))
            .collect();
        if have != want {
            anyhow::bail!(
                "{}: the table exists partitioned by [{}], not by partition={}: drop partition= or write to a new table",
                self.uri.display,
                have.join(", "),
                self.uri.partition.join(",")
            );
        }
        Ok(())
    }
}

/// `schema=` examples that do not fit an existing table mean the table is not the one meant.
fn check_examples(table: &Table, examples: &ColumnEncoder) -> Result<()> {
    let have = table::arrow_schema(table)?;
    let Some(want) = examples.schema() else {
        return Ok(());
    };
    let missing: Vec<&str> = want
        .fields()
        .iter()
        .filter(|f| have.field_with_name(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the table exists without the columns {} of the schema examples: write to a new table, or add evolve=true",
            missing.join(", ")
        );
    }
    Ok(())
}
