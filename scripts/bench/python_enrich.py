"""The way such stacks are usually glued: a confluent-kafka consume -> enrich -> produce loop.
Prints records/s from the first record read to the last delivery acknowledged.

    python_enrich.py BROKER IN_TOPIC OUT_TOPIC GROUP COUNT
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer

from session_rule import enrich


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
