"""Every JSON document avel writes goes through `dumps`: strict JSON, never the `NaN` or
`Infinity` that Python's json module writes by default (no JSON parser but Python's reads them).

    dumps(report, indent=2)                    # a metric that is NaN is written null
    dumps(config, nonfinite="refuse")          # a NaN here is a bug: ValueError naming where

`nonfinite` says what a NaN or an infinity becomes, chosen per document:
  * "null" (the default): measurements, where an undefined value is a fact to report (a metric
    without anything to score; the reason is said where the metric is made);
  * "refuse": settings and outputs that are validated or checked finite before they are
    written, where a non-finite value can only be a bug (ValueError naming its place).
Foundation module: imports nothing of the project.
"""

from __future__ import annotations

import json
import math

NONFINITE = ("null", "refuse")


def dumps(obj, *, nonfinite: str = "null", **kwargs) -> str:
    """json.dumps(obj, allow_nan=False, **kwargs) after `finite(obj, nonfinite)`."""
    return json.dumps(finite(obj, nonfinite), allow_nan=False, **kwargs)


def finite(obj, nonfinite: str = "null", where: str = "$"):
    """`obj` with every non-finite float (NaN, +-inf; a numpy float64 is a float) made None ("null") or
    refused ("refuse": ValueError naming its place, e.g. `$.runs[0].val.accuracy`); dicts,
    lists and tuples are copied, everything else is returned as it is."""
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite {nonfinite!r}: choose one of {', '.join(NONFINITE)}")
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if nonfinite == "refuse":
            raise ValueError(f"{where}: {obj} is not a JSON number")
        return None
    if isinstance(obj, dict):
        return {k: finite(v, nonfinite, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v, nonfinite, f"{where}[{i}]") for i, v in enumerate(obj)]
    return obj
