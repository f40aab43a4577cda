"""The way such stacks are usually glued: a confluent-kafka consume -> enrich -> produce loop.
Prints records/s from the first record read to the last delivery acknowledged.

    python_enrich.py BROKER IN_TOPIC OUT_TOPIC GROUP COUNT
"""
import datetime
import json
import sys
import time

from confluent_kafka import Consumer, Producer

COUNTRIES = {
    (39.0, 22.0): ("Greece", "GR"), (43.0, 25.0): ("Bulgaria", "BG"), (41.0, 20.0): ("Albania", "AL"),
    (35.0, 33.0): ("Cyprus", "CY"), (54.0, -2.0): ("United Kingdom", "GB"), (38.0, -97.0): ("United States", "US"),
    (51.0, 9.0): ("Germany", "DE"), (46.0, 2.0): ("France", "FR"), (42.8333, 12.8333): ("Italy", "IT"),
    (44.0, 21.0): ("Serbia", "RS"), (45.1667, 15.5): ("Croatia", "HR"), (52.5, 5.75): ("Netherlands", "NL"),
    (39.0, 35.0): ("Turkey", "TR"), (40.0, -4.0): ("Spain", "ES"), (52.0, 20.0): ("Poland", "PL"),
    (39.5, -8.0): ("Portugal", "PT"), (62.0, 15.0): ("Sweden", "SE"), (49.75, 15.5): ("Czech Republic", "CZ"),
    (56.0, 10.0): ("Denmark", "DK"), (47.3333, 13.3333): ("Austria", "AT"), (59.0, 26.0): ("Estonia", "EE"),
}


def enrich(session):
    name, code = COUNTRIES.get((round(session["latitude"], 4), round(session["longitude"], 4)), ("Unknown", "Unknown"))
    session["timestamp"] = datetime.datetime.fromtimestamp(session["timestamp"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S%z")
    session["country"], session["country_code"] = name, code
    session["status"] = "accepted" if "Greece" in name else "rejected"
    return session


def main():
    broker, source, sink, group, count = sys.argv[1:6]
    count = int(count)
    consumer = Consumer({"bootstrap.servers": broker, "group.id": group, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "fetch.queue.backoff.ms": 10})
    producer = Producer({"bootstrap.servers": broker, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                         "queue.buffering.max.messages": 500000})
    consumer.subscribe([source])
    done, started = 0, None
    while done < count:
        for m in consumer.consume(num_messages=1000, timeout=0.1):
            if m.error():
                continue
            started = started or time.perf_counter()
            value = json.dumps(enrich(json.loads(m.value())), separators=(",", ":"))
            while True:
                try:
                    producer.produce(sink, value=value, key=m.key())
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
            done += 1
    producer.flush(60)
    elapsed = time.perf_counter() - started
    print(f"python-loop {done} records in {elapsed:.2f} s = {done / elapsed:.0f} records/s")
    consumer.close()


if __name__ == "__main__":
    main()
