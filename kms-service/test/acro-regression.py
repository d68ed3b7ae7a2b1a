"""ACRO's verdict on ordinary least squares fits, for the residual-df rule's cross-check.

Reads JSON cases from stdin: [{"name", "n": observations, "k": parameters incl. intercept}],
fits y on k-1 deterministic regressors with ACRO's `ols`, prints {name: {"status", "dof"}}.
"""

import json
import logging
import sys

import numpy as np
import pandas as pd
from acro import ACRO


def main() -> None:
    logging.disable(logging.CRITICAL)
    acro = ACRO(suppress=False)
    out = {}
    for case in json.load(sys.stdin):
        n, k = case["n"], case["k"]
        rng = np.random.default_rng(7)
        x = pd.DataFrame(rng.normal(size=(n, k - 1)), columns=[f"x{i}" for i in range(k - 1)])
        x.insert(0, "const", 1.0)
        y = x.sum(axis=1) + rng.normal(size=n)
        model = acro.ols(y, x)
        record = list(acro.results.results.values())[-1]
        out[case["name"]] = {"status": record.status, "dof": int(model.df_resid)}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
