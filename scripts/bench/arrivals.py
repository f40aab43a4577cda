"""Reads lines on stdin and prints the monotonic time each one arrived (one per line)."""
import sys, time

out, now = [], time.monotonic
for _ in sys.stdin.buffer:
    out.append(now())
sys.stdout.write("".join(f"{t:.6f}\n" for t in out))
