"""Unit tests of the plugin's logic, run natively (no wasm): python -m unittest"""

import unittest

import app
import sluice


class StatefulTest(unittest.TestCase):
    def test_counts_per_name(self):
        state = sluice.MemoryState()
        counts = []
        for name in ["ada", "bob", "ada"]:
            ctx = sluice.Context(state)
            out = app.process(sluice.Message(f'{{"name":"{name}"}}'.encode(), timestamp_ms=0), ctx)
            ctx._commit()
            counts.append(out.value)
        self.assertEqual(counts[2], b'{"name":"ada","visits":2}')
        state.observe(app.HOUR_MS)
        fired = state.due()
        self.assertEqual(sorted(f.key for f in fired), [b"ada", b"bob"])


if __name__ == "__main__":
    unittest.main()
