"""python_split.py inside the component: enrich-py's process() on each batch, split into wire
decode, json.loads, the rule without JSON, json.dumps and wire encode, timed with the
interpreter's clock and logged every 20 batches (per record, cumulative). The output is the
real plugin's, so it runs as a drop-in for enrich-py:

    scripts/bench-py-split.sh [N]
"""
import json
import time

import enrich_app as enrich  # plugins/enrich-py/app.py, staged beside this file by the script
import sluice

_real = enrich.WitWorld()
_sum = {"whole": 0.0, "decode": 0.0, "loads": 0.0, "rule": 0.0, "dumps": 0.0, "encode": 0.0}
_records = 0
_batches = 0


def _rule_without_json(session):
    country, code = enrich.country_at(enrich.number(session, "latitude"), enrich.number(session, "longitude"))
    session["timestamp"] = enrich.format_timestamp(int(enrich.number(session, "timestamp")))
    session["country"] = country
    session["country_code"] = code
    session["status"] = "accepted" if country == "Greece" else "rejected"
    return session


class WitWorld:
    def init(self, config):
        _real.init(config)

    def process(self, batch: bytes) -> bytes:
        global _records, _batches
        clock = time.perf_counter
        t0 = clock()
        out = _real.process(batch)
        t1 = clock()
        msgs = sluice.decode_batch(batch)
        t2 = clock()
        sessions = [json.loads(m.value) for m in msgs]
        t3 = clock()
        sessions = [_rule_without_json(s) for s in sessions]
        t4 = clock()
        values = [json.dumps(s, separators=(",", ":"), ensure_ascii=False).encode() for s in sessions]
        t5 = clock()
        sluice.encode_outcomes([[m.with_value(v)] for m, v in zip(msgs, values)])
        t6 = clock()
        for k, dt in zip(_sum, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            _sum[k] += dt
        _records += len(msgs)
        _batches += 1
        if _batches % 20 == 0:
            per = {k: v / _records * 1e6 for k, v in _sum.items()}
            sluice.log("info", "per record (us): " + " ".join(f"{k}={v:.1f}" for k, v in per.items())
                       + f" records={_records} c_json={hasattr(json.decoder, 'c_scanstring') and json.decoder.c_scanstring is not None}")
        return out
