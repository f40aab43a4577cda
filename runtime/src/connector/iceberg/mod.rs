//! `iceberg://HOST:PORT/NAMESPACE/TABLE?warehouse=W` and
//! `iceberg+sqlite://PATH/catalog.db/NAMESPACE/TABLE?warehouse=DIR`: Apache Iceberg tables
//! through a REST catalog or the embedded SQL catalog, exactly once.
//!
//! Exactly once: each commit appends the data files written since the last one together with
//! the source positions they cover (snapshot summary, per writer), atomically. Records at or
//! before the table's positions are passed over, so a restart or a rebalance that re-reads
//! them writes nothing twice; a source reloads the positions when lanes are assigned to it
//! and has pending records committed before it gives lanes up.

mod catalog;
mod commit;
mod evolve;
mod open;
mod pending;
mod positions;
mod reload;
mod sink;
mod table;
mod uri;

pub use sink::IcebergSink;
pub use uri::IcebergUri;
