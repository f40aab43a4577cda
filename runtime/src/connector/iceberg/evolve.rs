//! `evolve=true`: fields the table lacks become new nullable columns (a schema-update commit)
//! instead of failing the records that carry them; no field is ever dropped silently.

use anyhow::{anyhow, bail, Result};
use arrow_json::reader::infer_json_schema_from_iterator;
use iceberg::arrow::arrow_type_to_type;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};

use super::catalog::{is_conflict, one_line};
use super::sink::{Shared, State};
use super::table;
use crate::format::parquet::ColumnEncoder;

/// Adds the top-level fields of the misfit records that the table lacks; `false` if they
/// lack none (they misfit for another reason, such as a wrong type).
pub(super) async fn add_columns(
    shared: &Shared,
    state: &mut State,
    values: &[&[u8]],
    misfits: &[(usize, String)],
) -> Result<bool> {
    let display = &shared.uri.display;
    let Some(table) = &state.table else {
        return Ok(false);
    };
    let schema = table.metadata().current_schema().clone();
    let extras: Vec<serde_json::Value> = misfits
        .iter()
        .filter_map(|(i, _)| match serde_json::from_slice(values[*i]) {
            Ok(serde_json::Value::Object(o)) => {
                let extra: serde_json::Map<_, _> = o
                    .into_iter()
                    .filter(|(k, v)| schema.field_by_name(k).is_none() && !v.is_null())
                    .collect();
                (!extra.is_empty()).then_some(serde_json::Value::Object(extra))
            }
            _ => None,
        })
        .collect();
    if extras.is_empty() {
        return Ok(false);
    }
    let columns = infer_json_schema_from_iterator(extras.iter().map(Ok))
        .map_err(|e| anyhow!("{display}: evolve: no column type fits the new fields: {e}"))?;
    let mut added = Vec::new();
    for field in columns.fields() {
        let ty = arrow_type_to_type(field.data_type()).map_err(|e| {
            anyhow!(
                "{display}: evolve: field `{}` ({}) cannot be added as a column ({}): add it to the table by hand",
                field.name(),
                field.data_type(),
                one_line(&e)
            )
        })?;
        added.push((field.name().clone(), ty));
    }
    // Files written so far keep the old schema; later rows go to files with the new one.
    state.pending.close_writer().await;
    loop {
        let table = shared
            .catalog
            .load(&shared.ident)
            .await?
            .ok_or_else(|| anyhow!("{display}: the table was dropped"))?;
        let have = table.metadata().current_schema().clone();
        let mut update = Transaction::new(&table).update_schema();
        let mut any = false;
        for (name, ty) in &added {
            if have.field_by_name(name).is_none() {
                update = update.add_column(AddColumn::optional(name, ty.clone()));
                any = true;
            }
        }
        if any {
            let tx = update
                .apply(Transaction::new(&table))
                .map_err(|e| anyhow!(one_line(&e)))?;
            let base = table.metadata().current_snapshot().map(|s| s.snapshot_id());
            match tx.commit(&shared.catalog.pinned(base)).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => continue,
                Err(e) => bail!(
                    "{display}: evolve: the schema update failed: {}",
                    one_line(&e)
                ),
            }
        } // else another writer added them
          // Loaded again: the commit's answer carries no storage settings vended by the catalog.
        let committed = shared
            .catalog
            .load(&shared.ident)
            .await?
            .ok_or_else(|| anyhow!("{display}: the table was dropped"))?;
        let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
        tracing::info!(table = %shared.uri.display, columns = ?names, "schema evolved: new columns added");
        state.encoder = Some(ColumnEncoder::with_schema(table::arrow_schema(&committed)?));
        state.table = Some(committed);
        return Ok(true);
    }
}
