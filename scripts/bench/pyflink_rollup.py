"""The rollup's windowed count in PyFlink (the engine of the stack Sluice replaces), on a file of
sessions: tumbling one-minute event-time windows per country and status, 10 s of lateness
(a watermark 10 s behind the highest event time), the counts written as JSON lines.

Usage: pyflink_rollup.py SESSIONS.jsonl OUT_DIR
Prints `flink: N records in S s (job), T s (with start-up)`."""
import sys
import time

started = time.time()
from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402

sessions, out = sys.argv[1], sys.argv[2]
env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
env.get_config().set("parallelism.default", "2")
env.execute_sql(f"""
    CREATE TABLE sessions (
        session_id STRING, ts_ms BIGINT, country STRING, status STRING,
        ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
        WATERMARK FOR ts AS ts - INTERVAL '10' SECOND
    ) WITH ('connector' = 'filesystem', 'path' = '{sessions}', 'format' = 'json')
""")
env.execute_sql(f"""
    CREATE TABLE counts (
        window_start TIMESTAMP(3), window_end TIMESTAMP(3), country STRING, status STRING, sessions BIGINT
    ) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json')
""")
job_started = time.time()
env.execute_sql("""
    INSERT INTO counts
    SELECT window_start, window_end, country, status, COUNT(*) AS sessions
    FROM TABLE(TUMBLE(TABLE sessions, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
    GROUP BY window_start, window_end, country, status
""").wait()
done = time.time()
n = sum(1 for _ in open(sessions))
print(f"flink: {n} records in {done - job_started:.1f} s (job), {done - started:.1f} s (with start-up)")
