//! Enrich in wasm (through the host, limits on) vs the same function compiled natively, and the
//! same rule written in Python and JavaScript.

use std::borrow::Cow;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_benches::{sessions, target_dir, transform, transform_at};
use sluice_sdk::Message;

const BATCH: usize = 256;

fn enrich(c: &mut Criterion) {
    let records = sessions(BATCH);
    let bytes: usize = records.iter().map(|r| r.value.len()).sum();
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut instance = transform("enrich");
    group.bench_function(format!("wasm/batch{BATCH}"), |b| {
        b.iter(|| {
            let out = instance.process(&records, None).expect("sessions enrich");
            assert_eq!(out.outputs.len(), BATCH);
            out
        })
    });

    // The boundary alone for these records: the identity plugin on the same batch.
    let mut identity = transform("identity");
    group.bench_function(format!("wasm-identity/batch{BATCH}"), |b| {
        b.iter(|| identity.process(&records, None).expect("identity"))
    });

    // The same rule in Python (componentize-py) and JavaScript (componentize-js).
    for lang in ["py", "js"] {
        let mut guest = transform_at(&target_dir().join(format!("guest/enrich-{lang}.wasm")));
        group.bench_function(format!("wasm-{lang}/batch{BATCH}"), |b| {
            b.iter(|| {
                let out = guest.process(&records, None).expect("sessions enrich");
                assert_eq!(out.outputs.len(), BATCH);
                out
            })
        });
    }

    // The plugin's own `process`, called natively on the same records.
    group.bench_function(format!("native/batch{BATCH}"), |b| {
        b.iter(|| {
            let out: Vec<Message<'_>> = records
                .iter()
                .map(|r| {
                    enrich::process(Message::new(Cow::Borrowed(&r.value[..])))
                        .expect("sessions enrich")
                })
                .collect();
            assert_eq!(out.len(), BATCH);
            out
        })
    });
    group.finish();
    eprintln!(
        "enrich bench: {BATCH} sessions, {} bytes on average",
        bytes / BATCH
    );
}

criterion_group!(benches, enrich);
criterion_main!(benches);
