//! A table's shape: the schema and partition spec of a table this sink creates (from example
//! records or the first batch), the Arrow schema records are decoded into (built from the
//! table's schema, so every column carries its Iceberg field id), and the writer that turns
//! record batches into data files rolled at the target size, one set per partition.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use iceberg::arrow::{
    arrow_schema_to_schema_auto_assign_ids, schema_to_arrow_schema, RecordBatchPartitionSplitter,
};
use iceberg::spec::{DataFile, DataFileFormat, Transform, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::unpartitioned_writer::UnpartitionedWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::TableCreation;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::connector::one_line;

/// One field of `partition=`: a transform of a top-level column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    pub source: String,
    pub transform: Transform,
}

impl PartitionField {
    /// `day(timestamp)`, `bucket[16](user_id)`, `truncate[4](name)` or a bare column (identity).
    pub fn parse(text: &str) -> Result<Self> {
        let fix = "use COLUMN, day(COLUMN), hour(COLUMN), month(COLUMN), year(COLUMN), \
                   bucket[N](COLUMN) or truncate[W](COLUMN)";
        let (transform, source) = match text.strip_suffix(')').and_then(|t| t.split_once('(')) {
            None => ("identity", text),
            Some((t, s)) => (t, s),
        };
        let source = source.trim();
        if source.is_empty() || source.contains(['(', ')', '[', ']', ',']) {
            bail!("partition `{text}` names no column: {fix}");
        }
        let transform: Transform = transform
            .trim()
            .parse()
            .map_err(|_| anyhow!("partition `{text}`: unknown transform `{transform}`: {fix}"))?;
        if matches!(transform, Transform::Void | Transform::Unknown) {
            bail!("partition `{text}`: {fix}");
        }
        Ok(PartitionField {
            source: source.to_owned(),
            transform,
        })
    }

    /// The partition field's name, as Spark and pyiceberg name it (`timestamp_day`).
    fn name(&self) -> String {
        match self.transform {
            Transform::Identity => self.source.clone(),
            Transform::Bucket(_) => format!("{}_bucket", self.source),
            Transform::Truncate(_) => format!("{}_trunc", self.source),
            t => format!("{}_{}", self.source, t.to_string().to_lowercase()),
        }
    }

    fn is_time(&self) -> bool {
        matches!(
            self.transform,
            Transform::Year | Transform::Month | Transform::Day | Transform::Hour
        )
    }
}

/// What to create when the table is missing: columns from `columns` (inferred from example
/// records or the first batch); a time transform makes its text column a timestamptz (records
/// carry RFC 3339 text such as `2026-11-25 17:03:31+00:00`).
pub fn creation(
    name: &str,
    columns: &ArrowSchema,
    partition: &[PartitionField],
) -> Result<TableCreation> {
    let mut fields: Vec<Field> = columns
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for p in partition {
        let Some(field) = fields.iter_mut().find(|f| f.name() == &p.source) else {
            bail!(
                "partition field `{}` is not a column of the records (columns: {}): fix partition=",
                p.source,
                columns
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if p.is_time() {
            match field.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => {
                    *field = field.clone().with_data_type(DataType::Timestamp(
                        TimeUnit::Microsecond,
                        Some("+00:00".into()),
                    ));
                }
                DataType::Timestamp(..) | DataType::Date32 => {}
                other => bail!(
                    "partition `{}({})`: the column is {other}, not a time: time transforms need RFC 3339 text",
                    p.transform,
                    p.source
                ),
            }
        }
    }
    let schema =
        arrow_schema_to_schema_auto_assign_ids(&ArrowSchema::new(fields)).map_err(|e| {
            anyhow!(
                "the records' columns are no Iceberg schema: {}",
                one_line(&e)
            )
        })?;
    let mut spec = UnboundPartitionSpec::builder();
    for p in partition {
        let source = schema
            .field_by_name(&p.source)
            .ok_or_else(|| anyhow!("partition field `{}` is not a column", p.source))?;
        spec = spec
            .add_partition_field(source.id, p.name(), p.transform)
            .map_err(|e| anyhow!("partition `{}`: {}", p.source, one_line(&e)))?;
    }
    Ok(TableCreation::builder()
        .name(name.to_owned())
        .schema(schema)
        .partition_spec(spec.build())
        .build())
}

/// The Arrow schema records are decoded into: the table's columns, each with its field id.
pub fn arrow_schema(table: &Table) -> Result<SchemaRef> {
    let schema = schema_to_arrow_schema(table.metadata().current_schema())
        .map_err(|e| anyhow!("the table's schema has no Arrow form: {}", one_line(&e)))?;
    Ok(Arc::new(schema))
}

type DataFiles =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

const ROW_GROUP_BYTES: usize = 8 << 20;

/// Data files being written for one commit: per partition, rolled at the target size.
pub enum FileWriter {
    Partitioned(Box<(RecordBatchPartitionSplitter, FanoutWriter<DataFiles>)>),
    Unpartitioned(Box<UnpartitionedWriter<DataFiles>>),
}

impl FileWriter {
    /// A writer whose files are named `PREFIX-N.parquet` under the table's data location.
    pub fn new(table: &Table, prefix: String, target_file_size: usize) -> Result<Self> {
        let metadata = table.metadata();
        // Row groups of 8 MiB encoded: each is uploaded as it is finished (a part of the file's
        // multipart upload), so closing the files at a commit has little left to send and the
        // writer holds little encoded data.
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .build();
        let parquet = ParquetWriterBuilder::new(properties, metadata.current_schema().clone());
        let location = DefaultLocationGenerator::new(metadata)
            .map_err(|e| anyhow!("the table has no data location: {}", one_line(&e)))?;
        let names = DefaultFileNameGenerator::new(prefix, None, DataFileFormat::Parquet);
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            target_file_size,
            table.file_io().clone(),
            location,
            names,
        );
        let files = DataFileWriterBuilder::new(rolling);
        let spec = metadata.default_partition_spec();
        Ok(if spec.is_unpartitioned() {
            FileWriter::Unpartitioned(Box::new(UnpartitionedWriter::new(files)))
        } else {
            let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
                metadata.current_schema().clone(),
                spec.clone(),
            )
            .map_err(|e| anyhow!("the table's partition spec: {}", one_line(&e)))?;
            FileWriter::Partitioned(Box::new((splitter, FanoutWriter::new(files))))
        })
    }

    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        match self {
            FileWriter::Unpartitioned(w) => w.write(batch).await,
            FileWriter::Partitioned(w) => {
                let (splitter, writer) = &mut **w;
                let parts = splitter
                    .split(&batch)
                    .map_err(|e| anyhow!("partitioning records: {}", one_line(&e)))?;
                for (key, part) in parts {
                    writer.write(key, part).await?;
                }
                Ok(())
            }
        }
        .map_err(|e| anyhow!("writing a data file: {e}"))
    }

    /// Finishes every open file; their descriptions go into the commit.
    pub async fn close(self) -> Result<Vec<DataFile>> {
        match self {
            FileWriter::Unpartitioned(w) => w.close().await,
            FileWriter::Partitioned(w) => w.1.close().await,
        }
        .map_err(|e| anyhow!("finishing data files: {}", one_line(&e)))
    }
}

/// `table` (its metadata: schema, spec, location) writing through `fresh`'s storage.
pub fn with_storage_of(table: &Table, fresh: &Table) -> Result<Table> {
    let mut builder = Table::builder()
        .identifier(table.identifier().clone())
        .metadata(table.metadata_ref())
        .file_io(fresh.file_io().clone())
        .runtime(iceberg::Runtime::current());
    if let Some(location) = table.metadata_location() {
        builder = builder.metadata_location(location);
    }
    builder.build().map_err(|e| anyhow!(one_line(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_fields_parse() {
        let p = PartitionField::parse("day(timestamp)").unwrap();
        assert_eq!(p.transform, Transform::Day);
        assert_eq!(p.name(), "timestamp_day");
        let p = PartitionField::parse("bucket[16](user_id)").unwrap();
        assert_eq!(p.transform, Transform::Bucket(16));
        assert_eq!(
            PartitionField::parse("country").unwrap().transform,
            Transform::Identity
        );
        for bad in ["week(ts)", "day()", "bucket[x](id)", "void(ts)"] {
            assert!(PartitionField::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_time_partition_makes_its_text_column_a_timestamp() {
        let columns = ArrowSchema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("timestamp", DataType::Utf8, true),
        ]);
        let day = PartitionField::parse("day(timestamp)").unwrap();
        let c = creation("t", &columns, std::slice::from_ref(&day)).unwrap();
        let ts = c.schema.field_by_name("timestamp").unwrap();
        assert_eq!(ts.field_type.to_string(), "timestamptz");
        let missing = PartitionField::parse("day(ts)").unwrap();
        let e = creation("t", &columns, &[missing]).unwrap_err().to_string();
        assert!(
            e.contains("`ts` is not a column") && e.contains("id, timestamp"),
            "{e}"
        );
        let numeric = ArrowSchema::new(vec![Field::new("n", DataType::Int64, true)]);
        let e = creation("t", &numeric, &[PartitionField::parse("day(n)").unwrap()]).unwrap_err();
        assert!(e.to_string().contains("not a time"), "{e}");
    }
}
