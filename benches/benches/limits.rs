//! What the plugin limits cost: enrich in wasm on batches of mock sessions with no epoch
//! deadline, with the deadline (the production default), and with the deadline plus fuel
//! metering. The memory cap costs nothing per call (it is checked when memory grows).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::plugin::Limits;
use sluice_benches::{sessions, target_dir, transform_metered};

const BATCH: usize = 256;

fn limits(c: &mut Criterion) {
    let records = sessions(BATCH);
    let enrich = target_dir().join("wasm32-wasip2/release/enrich.wasm");
    let mut group = c.benchmark_group("limits");
    group.throughput(Throughput::Elements(BATCH as u64));
    let fueled = Limits {
        fuel: Some(u64::MAX / 2),
        ..Limits::default()
    };
    for (name, fuel, deadlines, limits) in [
        ("no-deadline", false, false, Limits::default()),
        ("deadline", false, true, Limits::default()),
        ("deadline+fuel", true, true, fueled),
    ] {
        let mut instance = transform_metered(&enrich, fuel, deadlines, limits);
        group.bench_function(format!("enrich/{name}/batch{BATCH}"), |b| {
            b.iter(|| {
                let out = instance.process(&records, None).expect("sessions enrich");
                assert_eq!(out.outputs.len(), BATCH);
                out
            })
        });
    }
    group.finish();
}

criterion_group!(benches, limits);
criterion_main!(benches);
