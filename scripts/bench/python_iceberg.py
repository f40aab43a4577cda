"""The consumer Sluice replaces, as such stacks write it: confluent-kafka poll -> enrich ->
pyarrow table -> pyiceberg append every EVERY records (at-least-once: offsets committed after
each append). Prints records/s from the first record read to the last append.

    python_iceberg.py BROKER TOPIC GROUP COUNT CATALOG_HOST:PORT S3_HOST:PORT TABLE [EVERY]
"""
import datetime
import json
import sys
import time

import pyarrow as pa
from confluent_kafka import Consumer
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import DayTransform

from session_rule import enrich


def main():
    broker, topic, group, count, catalog, s3, table = sys.argv[1:8]
    count, every = int(count), int(sys.argv[8]) if len(sys.argv) > 8 else 100_000
    c = RestCatalog("bench", uri=f"http://{catalog}", warehouse="warehouse", credential="admin:password",
                    **{"s3.endpoint": f"http://{s3}", "s3.access-key-id": "admin", "s3.secret-access-key": "password",
                       "s3.region": "us-east-1", "s3.path-style-access": "true"})
    consumer = Consumer({"bootstrap.servers": broker, "group.id": group, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "fetch.queue.backoff.ms": 10, "enable.auto.commit": False})
    consumer.subscribe([topic])
    rows, done, started, t = [], 0, None, None
    parse = lambda s: datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S%z")

    def append():
        nonlocal t, rows
        batch = pa.Table.from_pylist(rows)
        batch = batch.set_column(batch.schema.get_field_index("timestamp"), "timestamp",
                                 pa.array([parse(r["timestamp"]) for r in rows], pa.timestamp("us", tz="UTC")))
        if t is None:
            c.create_namespace_if_not_exists(table.split(".")[0])
            t = c.create_table(table, schema=batch.schema)
            with t.update_spec() as spec:
                spec.add_field("timestamp", DayTransform(), "timestamp_day")
            t = c.load_table(table)
        t.append(batch)
        consumer.commit(asynchronous=False)
        rows = []

    while done < count:
        for m in consumer.consume(num_messages=1000, timeout=0.1):
            if m.error():
                continue
            started = started or time.perf_counter()
            rows.append(enrich(json.loads(m.value())))
            done += 1
            if len(rows) >= every:
                append()
    if rows:
        append()
    elapsed = time.perf_counter() - started
    print(f"python-iceberg {done} records in {elapsed:.2f} s = {done / elapsed:.0f} records/s")
    consumer.close()


if __name__ == "__main__":
    main()
