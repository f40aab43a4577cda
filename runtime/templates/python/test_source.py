"""Unit tests of the plugin's logic, run natively (no wasm): python -m unittest"""

import unittest

import app


class NextTest(unittest.TestCase):
    def test_one_record_per_interval_of_host_time(self):
        app.init({"interval_ms": "500"})
        self.assertEqual(len(app.next_batch(10, 1000)), 1)
        self.assertEqual(len(app.next_batch(10, 1400)), 0)
        out = app.next_batch(10, 2000)
        self.assertEqual(out[1].value, b'{"n":2,"at_ms":2000}')


if __name__ == "__main__":
    unittest.main()
