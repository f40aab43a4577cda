"""End-to-end freshness of a table a runtime fills from a topic: produces one probe session a
second (its own session_id) and times how long until pyiceberg sees it. Prints p50/p99.

    iceberg_freshness.py BROKER TOPIC CATALOG_HOST:PORT S3_HOST:PORT TABLE PROBES
"""
import json
import statistics
import sys
import threading
import time

from confluent_kafka import Producer
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.expressions import In


def main():
    broker, topic, catalog, s3, table, probes = sys.argv[1:7]
    probes = int(probes)
    c = RestCatalog("fresh", uri=f"http://{catalog}", warehouse="warehouse", credential="admin:password",
                    **{"s3.endpoint": f"http://{s3}", "s3.access-key-id": "admin", "s3.secret-access-key": "password",
                       "s3.region": "us-east-1", "s3.path-style-access": "true"})
    producer = Producer({"bootstrap.servers": broker, "acks": "all"})
    sent = {}

    def produce():
        for i in range(probes):
            sid = f"probe-{i}-{time.time_ns()}"
            session = {"session_id": sid, "user_id": "probe", "device_id": "probe", "device_type": "Linux",
                       "operating_system": "Debian 12", "app_version": "1.0.0", "timestamp": int(time.time()),
                       "session_duration": 1, "clicks": 1, "views": 1, "latitude": 39.0, "longitude": 22.0,
                       "events": [{"event_type": "login", "timestamp": int(time.time())}]}
            producer.produce(topic, key=sid, value=json.dumps(session))
            producer.flush(10)
            sent[sid] = time.perf_counter()
            time.sleep(1)

    writer = threading.Thread(target=produce)
    writer.start()
    seen = {}
    deadline = time.perf_counter() + probes + 120
    while len(seen) < probes and time.perf_counter() < deadline:
        waiting = [s for s in list(sent) if s not in seen]
        if waiting:
            try:
                t = c.load_table(table)
                found = t.scan(row_filter=In("session_id", waiting), selected_fields=("session_id",)).to_arrow()
                now = time.perf_counter()
                for sid in found.column("session_id").to_pylist():
                    seen.setdefault(sid, now - sent[sid])
            except Exception as e:  # the table may not exist yet
                print(f"(waiting: {e})", file=sys.stderr)
        time.sleep(0.2)
    writer.join()
    lat = sorted(seen.values())
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"freshness over {len(lat)}/{probes} probes: p50 {p(0.5):.1f} s, p99 {p(0.99):.1f} s, max {lat[-1]:.1f} s")


if __name__ == "__main__":
    main()
