"""Unit tests of the plugin's logic, run natively (no wasm): python -m unittest"""

import unittest

import app
import sluice


class ProcessTest(unittest.TestCase):
    def test_greets_by_name_and_keeps_the_key(self):
        out = app.process(sluice.Message(b'{"name":"ada"}', key=b"k"))
        self.assertEqual(out.value, b'{"name":"ada","greeting":"hello, ada"}')
        self.assertEqual(out.key, b"k")

    def test_a_record_that_is_not_an_object_fails_alone(self):
        with self.assertRaisesRegex(sluice.RecordError, "not a JSON object"):
            app.process(sluice.Message(b"[1]"))


if __name__ == "__main__":
    unittest.main()
