"""The seed rule as a plain CPython script over JSON lines: json.loads -> rule -> json.dumps
per line, stdin to stdout. The baseline `runtime run --plugin enrich.wasm` is compared with."""
import json
import sys

from session_rule import enrich


def main():
    out = sys.stdout
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(enrich(json.loads(line)), separators=(",", ":")))
            out.write("\n")


if __name__ == "__main__":
    main()
