//! `evolve=true`: fields the table lacks become new nullable columns (a schema-update commit)
//! instead of failing the records that carry them; no field is ever dropped silently. A field
//! that cannot become a column (nested: its inner fields would need ids of their own) fails
//! only the records that carry it, with what to do instead.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use arrow_json::reader::infer_json_schema_from_iterator;
use iceberg::arrow::arrow_type_to_type;
use iceberg::spec::Type;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};

use super::catalog::is_conflict;
use super::sink::{Shared, State};
use crate::connector::backoff;
use crate::connector::one_line;

/// What [`add_columns`] did.
#[derive(Default)]
pub(super) struct Evolved {
    /// Columns were added: encode the records again.
    pub added: bool,
    /// Fields that cannot be added, and why: the records carrying them fail with the reason.
    pub refused: Vec<Unaddable>,
}

/// A new field `evolve=true` cannot add as a column.
pub(super) struct Unaddable {
    pub field: String,
    pub reason: String,
}

/// The first field of the record `value` that cannot be added, if it has one.
pub(super) fn unaddable_in<'a>(value: &[u8], unaddable: &'a [Unaddable]) -> Option<&'a Unaddable> {
    if unaddable.is_empty() {
        return None;
    }
    let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(value) else {
        return None;
    };
    unaddable.iter().find(|u| o.contains_key(&u.field))
}

/// Adds the top-level fields of the misfit records that the table lacks, where they can be
/// columns; says which cannot.
pub(super) async fn add_columns(
    shared: &Shared,
    state: &mut State,
    values: &[&[u8]],
    misfits: &[(usize, String)],
) -> Result<Evolved> {
    let display = &shared.uri.display;
    let Some(table) = &state.table else {
        return Ok(Evolved::default());
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
    let mut evolved = Evolved::default();
    let (added, refused) = new_columns(&extras);
    evolved.refused = refused;
    if added.is_empty() {
        return Ok(evolved);
    }
    // Files written so far keep the old schema; later rows go to files with the new one.
    state.pending.close_writer().await;
    // A schema update carries no positions: it is not pinned to the snapshot it was made on,
    // only retried (with a pause) when another writer changed the schema first.
    let mut delays = backoff::delays(Duration::from_millis(20), Duration::from_secs(2));
    let fresh = loop {
        let table = shared
            .load_fresh()
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
        if !any {
            break table; // another writer added them
        }
        let tx = update
            .apply(Transaction::new(&table))
            .map_err(|e| anyhow!(one_line(&e)))?;
        match tx.commit(&*shared.catalog).await {
            Ok(_) => {
                // Loaded again: the commit's answer carries no storage settings vended by
                // the catalog.
                break shared
                    .load_fresh()
                    .await?
                    .ok_or_else(|| anyhow!("{display}: the table was dropped"))?;
            }
            Err(e) if is_conflict(&e) => {
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(2))).await;
            }
            Err(e) => bail!(
                "{display}: evolve: the schema update failed: {}",
                one_line(&e)
            ),
        }
    };
    let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
    tracing::info!(table = %shared.uri.display, columns = ?names, "schema evolved: new columns added");
    shared.adopt(state, fresh).await?;
    evolved.added = true;
    Ok(evolved)
}

/// The columns the new fields of `extras` (JSON objects of the fields a table lacks) become,
/// and the fields that cannot be columns, with the reason.
fn new_columns(extras: &[serde_json::Value]) -> (Vec<(String, Type)>, Vec<Unaddable>) {
    let (mut added, mut refused) = (Vec::new(), Vec::new());
    if extras.is_empty() {
        return (added, refused);
    }
    let columns = match infer_json_schema_from_iterator(extras.iter().map(Ok)) {
        Ok(columns) => columns,
        Err(e) => {
            // Types that conflict between records: each new field is refused with the reason.
            let fields = extras
                .iter()
                .filter_map(|v| v.as_object())
                .flat_map(|o| o.keys().cloned());
            let mut seen = std::collections::BTreeSet::new();
            for field in fields.filter(|f| seen.insert(f.clone())) {
                refused.push(Unaddable {
                    reason: format!(
                        "evolve=true cannot add field `{field}`: no column type fits every record ({e})"
                    ),
                    field,
                });
            }
            return (added, refused);
        }
    };
    for field in columns.fields() {
        let nested = field.data_type().is_nested();
        match arrow_type_to_type(field.data_type()) {
            Ok(ty) if !nested && ty.is_primitive() => added.push((field.name().clone(), ty)),
            result => {
                let why = match result {
                    Err(e) => one_line(&e),
                    Ok(_) => "a nested type's inner fields need ids of their own".to_owned(),
                };
                refused.push(Unaddable {
                    field: field.name().clone(),
                    reason: format!(
                        "evolve=true cannot add field `{}` ({}) as a column ({why}): add the column \
                         to the table by hand (e.g. pyiceberg's update_schema), or leave the field out",
                        field.name(),
                        field.data_type()
                    ),
                });
            }
        }
    }
    (added, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flat_fields_become_columns_and_nested_ones_are_refused_with_the_fix() {
        let (added, refused) = new_columns(&[
            json!({"city": "Oslo", "visits": 3}),
            json!({"device": {"os": "linux"}, "tags": ["a", "b"]}),
        ]);
        let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["city", "visits"]);
        let refused: Vec<&str> = refused.iter().map(|u| u.field.as_str()).collect();
        assert_eq!(refused, ["device", "tags"]);
    }

    #[test]
    fn conflicting_types_are_refused_not_fatal() {
        let (added, refused) = new_columns(&[json!({"x": 1}), json!({"x": {"y": 1}})]);
        assert!(added.is_empty());
        assert_eq!(refused.len(), 1);
        assert!(refused[0].reason.contains("`x`"), "{}", refused[0].reason);
    }

    #[test]
    fn the_record_names_the_field_it_cannot_have() {
        let refused = vec![Unaddable {
            field: "device".into(),
            reason: "why".into(),
        }];
        assert!(unaddable_in(br#"{"device":{"os":"x"}}"#, &refused).is_some());
        assert!(unaddable_in(br#"{"city":"x"}"#, &refused).is_none());
        assert!(unaddable_in(b"not json", &refused).is_none());
    }
}
