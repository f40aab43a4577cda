//! What one plugin call costs: the identity plugin, batches of 256 records with 200-byte
//! values, production limits on. Includes host encode, the call, guest decode/encode and host
//! decode into records.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_benches::{fixed_size_records, transform};

fn identity(c: &mut Criterion) {
    let mut instance = transform("identity");
    let mut group = c.benchmark_group("plugin_call");
    for batch in [1usize, 64, 256, 1024] {
        let records = fixed_size_records(batch, 200);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("identity/batch{batch}/200B"), |b| {
            b.iter(|| {
                let out = instance
                    .process(&records, None)
                    .expect("identity never fails");
                assert_eq!(out.outputs.len(), batch);
                out
            })
        });
    }
    group.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
