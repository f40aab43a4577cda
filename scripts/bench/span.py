"""Seconds between the first log line containing START and the last containing END.

Usage: span.py LOG START END (runtime logs: each line starts with an RFC 3339 timestamp)."""
import datetime, re, sys

log, start, end = open(sys.argv[1]).read().splitlines(), sys.argv[2], sys.argv[3]
ts = lambda l: datetime.datetime.fromisoformat(re.match(r"\S+", l).group(0).replace("Z", "+00:00"))
first = next(ts(l) for l in log if start in l)
last = [ts(l) for l in log if end in l][-1]
print(f"{(last - first).total_seconds():.3f}")
