"""{{name}}: a Sluice transform plugin. It adds a `greeting` to every JSON record, from the
record's `name` and the `greeting` setting (default "hello"); a record that is not a JSON object
fails alone and goes where the pipeline's error policy says (fail, skip or dlq)."""

import json

import sluice

GREETING = "hello"


def init(settings: dict) -> None:
    """Called once per instance with the pipeline's settings (`--set greeting=hi`); an error
    stops the plugin from loading and is shown to the user as is."""
    global GREETING
    GREETING = settings.get("greeting", GREETING)
    if not GREETING:
        raise ValueError("greeting is empty: set it to a word, e.g. greeting=hi")


def process(msg: sluice.Message) -> sluice.Message:
    """One record in, one out. Return None to filter, a list to fan out."""
    try:
        record = json.loads(msg.value)
    except ValueError as e:
        raise sluice.RecordError(f"not a JSON object ({e})")
    if not isinstance(record, dict):
        raise sluice.RecordError("not a JSON object")
    name = record.get("name")
    record["greeting"] = f"{GREETING}, {name if isinstance(name, str) else 'stranger'}"
    # with_value keeps the key, headers and timestamp.
    return msg.with_value(json.dumps(record, separators=(",", ":")))


WitWorld = sluice.transform(process, init=init)
