"""ACRO's verdicts on the tables the disclosure-checker test also checks.

Reads JSON cases from stdin: [{"name", "kind": "frequency" | "magnitude", "rows": [[row, col, value], ...]}]
and prints {name: {"status": ..., "cells": {"row/col": [rules]}}} with ACRO's check names mapped
to the checker's rule names.
"""

import json
import logging
import sys

import pandas as pd
from acro import ACRO

RULES = {
    "MinimumThresholdCheck": "threshold",
    "PresenceOfZeroCheck": "zero",
    "PPercentCheck": "p-ratio",
    "NKCheck": "nk-rule",
}


def main() -> None:
    logging.disable(logging.CRITICAL)
    cases = json.load(sys.stdin)
    acro = ACRO(suppress=False)
    out = {}
    for case in cases:
        df = pd.DataFrame(case["rows"], columns=["row", "col", "value"])
        if case["kind"] == "magnitude":
            acro.crosstab(df.row, df.col, values=df.value, aggfunc="sum")
        else:
            acro.crosstab(df.row, df.col)
        record = list(acro.results.results.values())[-1]
        table = record.output[0]
        cells: dict[str, list[str]] = {
            f"{r}/{c}": [] for r in table.index for c in table.columns
        }
        for check, positions in record.sdc["cells"].items():
            for i, j in positions:
                rule = RULES.get(check, check)
                cells[f"{table.index[i]}/{table.columns[j]}"].append(rule)
        out[case["name"]] = {
            "status": record.status,
            "cells": {k: sorted(v) for k, v in cells.items()},
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
