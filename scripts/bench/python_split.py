"""Where a Python plugin's time goes, natively: the enrich-py plugin's `process` over wire
batches of mock sessions, split into wire decode, the rule (json.loads, json.dumps) and wire
encode, next to the seed rule as a plain loop. Compare with `cargo bench --bench enrich`
(enrich/wasm-py) for the same code under componentize-py.

    python3 scripts/bench/python_split.py SESSIONS.jsonl      (from the repository root)
"""
import json
import sys
import time

sys.path[:0] = ["plugins/sdk/python", "plugins/enrich-py", "scripts/bench"]
import app  # noqa: E402
import sluice  # noqa: E402
from session_rule import enrich as seed_enrich  # noqa: E402
with open(sys.argv[1], "rb") as f:
    lines = [line.rstrip(b"\n") for line in f][:2560]
batches = [sluice.encode_batch([sluice.Message(v, origin=f"stdin:{i}") for i, v in enumerate(lines[j:j+256])]) for j in range(0, len(lines), 256)]
w = app.WitWorld()
def timed(f, reps=5):
    best = 1e9
    for _ in range(reps):
        t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t)
    return best / len(lines) * 1e6
whole = timed(lambda: [w.process(b) for b in batches])
decode = timed(lambda: [sluice.decode_batch(b) for b in batches])
msgs = [sluice.decode_batch(b) for b in batches]
rule = timed(lambda: [[app.enrich(m.value) for m in ms] for ms in msgs])
outs = [[[app.process(m)] for m in ms] for ms in msgs]
encode = timed(lambda: [sluice.encode_outcomes(o) for o in outs])
loads = timed(lambda: [json.loads(v) for v in lines])
dumps_objs = [json.loads(v) for v in lines]
dumps = timed(lambda: [json.dumps(o, separators=(",", ":"), ensure_ascii=False) for o in dumps_objs])
seed = timed(lambda: [json.dumps(seed_enrich(json.loads(v)), separators=(",", ":")) for v in lines])
print(f"per record, native CPython {sys.version.split()[0]}: plugin process() {whole:.1f} us = decode {decode:.1f} + rule {rule:.1f} (json.loads {loads:.1f}, json.dumps {dumps:.1f}) + encode {encode:.1f}; seed script loop {seed:.1f} us")
