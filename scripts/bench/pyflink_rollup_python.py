"""The rollup's windowed count in PyFlink's DataStream API with the logic in Python, as the
stack's users write their Flink jobs: each line parsed with json in Python, event time from
`ts_ms`, a 10 s bounded-out-of-orderness watermark, tumbling one-minute windows keyed by
country and status, counted by a Python reduce, written as JSON lines.

Usage: pyflink_rollup_python.py SESSIONS.jsonl OUT_DIR
Prints `flink: N records in S s (job), T s (with start-up)`."""
import sys
import time

started = time.time()
import json  # noqa: E402

from pyflink.common import Duration, Encoder, Types, WatermarkStrategy  # noqa: E402
from pyflink.common.watermark_strategy import TimestampAssigner  # noqa: E402
from pyflink.datastream import StreamExecutionEnvironment  # noqa: E402
from pyflink.datastream.connectors.file_system import (  # noqa: E402
    FileSink, FileSource, StreamFormat)
from pyflink.datastream.functions import ProcessWindowFunction  # noqa: E402
from pyflink.datastream.window import TumblingEventTimeWindows  # noqa: E402
from pyflink.common.time import Time  # noqa: E402

sessions, out = sys.argv[1], sys.argv[2]


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp):
        return value[2]


def fmt(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


class Emit(ProcessWindowFunction):
    def process(self, key, context, counts):
        for c in counts:
            w = context.window()
            yield json.dumps({"window_start": fmt(w.start), "window_end": fmt(w.end),
                              "country": c[0], "status": c[1], "sessions": c[3]})


def parse(line):
    s = json.loads(line)
    return s["country"], s["status"], s["ts_ms"], 1


env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(2)
env.set_python_executable(sys.executable)  # the workers run in this venv too
lines = env.from_source(FileSource.for_record_stream_format(StreamFormat.text_line_format(), sessions).build(),
                        WatermarkStrategy.no_watermarks(), "sessions")
counted = (
    lines.map(parse, output_type=Types.TUPLE([Types.STRING(), Types.STRING(), Types.LONG(), Types.LONG()]))
    .assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(10)).with_timestamp_assigner(EventTime()))
    .key_by(lambda s: (s[0], s[1]), key_type=Types.TUPLE([Types.STRING(), Types.STRING()]))
    .window(TumblingEventTimeWindows.of(Time.minutes(1)))
    .reduce(lambda a, b: (a[0], a[1], a[2], a[3] + b[3]), window_function=Emit(), output_type=Types.STRING())
)
counted.sink_to(FileSink.for_row_format(out, Encoder.simple_string_encoder()).build())
job_started = time.time()
env.execute("rollup")
done = time.time()
n = sum(1 for _ in open(sessions))
print(f"flink: {n} records in {done - job_started:.1f} s (job), {done - started:.1f} s (with start-up)")
