//! Rollup's state access pattern (get + put of an 8-byte count per record, 100 k keys, batches
//! of 1 000 records, a snapshot of every entry at the end) on a BTreeMap, redb and fjall.
use redb::ReadableTable;
use std::collections::BTreeMap;
use std::time::Instant;

const KEYS: u64 = 100_000;
const UPDATES: u64 = 1_000_000;
const BATCH: u64 = 1_000;

fn key(i: u64) -> Vec<u8> {
    // rollup's layout: 'w' + window start + country \0 status
    let k = i.wrapping_mul(2654435761) % KEYS;
    let mut v = vec![b'w'];
    v.extend_from_slice(&(k / 50).to_be_bytes());
    v.extend_from_slice(format!("country-{}\0accepted", k % 50).as_bytes());
    v
}

fn report(name: &str, t: Instant, snap: std::time::Duration, bytes: usize) {
    let s = t.elapsed().as_secs_f64();
    println!("{name:8} updates {:>9.0}/s   snapshot of {KEYS} keys {:>6.1} ms ({bytes} bytes)", UPDATES as f64 / s, snap.as_secs_f64() * 1e3);
}

fn main() {
    // BTreeMap
    let t = Instant::now();
    let mut m: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for i in 0..UPDATES {
        let k = key(i);
        let n = m.get(&k).map_or(0, |v| u64::from_le_bytes(v[..].try_into().unwrap())) + 1;
        m.insert(k, n.to_le_bytes().to_vec());
    }
    let ts = Instant::now();
    let mut snap = Vec::new();
    for (k, v) in &m { snap.extend_from_slice(k); snap.extend_from_slice(v); }
    let sd = ts.elapsed();
    report("btreemap", t, sd, snap.len());

    // redb: one write transaction per batch, no fsync (the checkpoint is the durable copy)
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("s.redb")).unwrap();
    const T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("s");
    let t = Instant::now();
    let mut i = 0;
    while i < UPDATES {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(redb::Durability::None);
        {
            let mut table = tx.open_table(T).unwrap();
            for j in i..i + BATCH {
                let k = key(j);
                let n = table.get(&k[..]).unwrap().map_or(0, |v| u64::from_le_bytes(v.value().try_into().unwrap())) + 1;
                table.insert(&k[..], &n.to_le_bytes()[..]).unwrap();
            }
        }
        tx.commit().unwrap();
        i += BATCH;
    }
    let ts = Instant::now();
    let rx = db.begin_read().unwrap();
    let table = rx.open_table(T).unwrap();
    let mut snap = Vec::new();
    for e in table.iter().unwrap() { let (k, v) = e.unwrap(); snap.extend_from_slice(k.value()); snap.extend_from_slice(v.value()); }
    report("redb", t, ts.elapsed(), snap.len());

    // fjall: LSM, writes to the journal without fsync
    let dir = tempfile::tempdir().unwrap();
    let ks = fjall::Config::new(dir.path()).open().unwrap();
    let p = ks.open_partition("s", fjall::PartitionCreateOptions::default()).unwrap();
    let t = Instant::now();
    for i in 0..UPDATES {
        let k = key(i);
        let n = p.get(&k).unwrap().map_or(0, |v| u64::from_le_bytes(v[..].try_into().unwrap())) + 1;
        p.insert(&k, n.to_le_bytes()).unwrap();
    }
    let ts = Instant::now();
    let mut snap = Vec::new();
    for e in p.iter() { let (k, v) = e.unwrap(); snap.extend_from_slice(&k); snap.extend_from_slice(&v); }
    report("fjall", t, ts.elapsed(), snap.len());
}
