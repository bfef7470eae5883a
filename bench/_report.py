"""The headline figures of a benchmark, in one line each that `bench/run_all.py` collects.

A bench prints its full table for people and, for each figure worth tracking, one `result(...)` line:

    BENCH_RESULT {"bench": "overview", "figure": "dashboard p95", "value": 41.2, "unit": "ms", ...}

`make bench` (run_all.py --update-docs) rewrites the figures table of docs/performance.md from these lines,
with the machine and the command; the hand-written analysis around the table stays as it is.
"""

from __future__ import annotations

import json

PREFIX = "BENCH_RESULT "


def result(
    bench: str,
    figure: str,
    value: float,
    *,
    unit: str,
    baseline: float | None = None,
    baseline_label: str = "",
    target: str = "",
    met: bool | None = None,
    better: str = "lower",
) -> None:
    """One figure beside the baseline measured in the same run (ratio = value / baseline)."""
    ratio = (value / baseline) if baseline else None
    line = {
        "bench": bench,
        "figure": figure,
        "value": round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "baseline_label": baseline_label,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": met,
        "better": better,
    }
    print(PREFIX + json.dumps(line), flush=True)
