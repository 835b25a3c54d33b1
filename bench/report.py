"""How the single-model throughput scripts (classify.py, forecast.py) end: a key/value table unless
--json-only, then one JSON line, which bench/seq2seq.py's run_script reads."""
from __future__ import annotations

import json


def report(results: dict, json_only: bool) -> None:
    if not json_only:
        width = max(len(key) for key in results) + 2
        for key, value in results.items():
            print(f"{key:<{width}}{value}")
    print(json.dumps(results))
