#!/usr/bin/env python
"""Run every benchmark in bench/ (each prints its figures and the baseline it compares with).

    .venv/bin/python bench/run_all.py [--update-docs] [--only NAME ...] [-- extra args for every bench]

With --update-docs (what `make bench` passes) the table between the `bench:figures` markers of
docs/performance.md is rewritten from the `BENCH_RESULT` lines the benches printed (bench/_report.py), with
the date, the machine, its load and the command; a bench that failed keeps a row saying so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _report import PREFIX  # noqa: E402

DOC = HERE.parent / "docs" / "performance.md"
START, END = "<!-- bench:figures:start -->", "<!-- bench:figures:end -->"


def scripts(only: list[str]) -> list[Path]:
    found = [p for p in sorted(HERE.glob("*.py")) if p.name != "run_all.py" and not p.name.startswith("_")]
    return [p for p in found if not only or p.stem in only]


def run(script: Path, extra: list[str]) -> tuple[int, list[dict], float]:
    """Run one bench, echoing its output, and collect its BENCH_RESULT lines."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), *extra], stdout=subprocess.PIPE, text=True, bufsize=1)
    results = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(PREFIX):
            results.append(json.loads(line[len(PREFIX) :]))
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
    return proc.wait(), results, time.monotonic() - started


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    return f"{int(value):,}"


def table(runs: list[tuple[str, int, list[dict], float]], command: str, load: tuple[float, float]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START,
        f"Last `make bench`: {now} on {machine()}; load average {load[0]:.2f} before, {load[1]:.2f} after "
        f"(other work on the two cores inflates wall times; ratios to the same-run baselines hold better).",
        f"Command: `{command}`. Written by bench/run_all.py from each bench's `BENCH_RESULT` lines; do not edit "
        "by hand.",
        "",
        "| bench | figure | value | baseline (same run) | ratio | target | met |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for name, code, results, seconds in runs:
        if code != 0 and not results:
            lines.append(f"| {name} | failed (exit {code}) after {seconds:.0f} s | — | — | — | — | — |")
            continue
        for r in results:
            base = f"{fmt(r['baseline'])} {r['unit']} ({r['baseline_label']})" if r["baseline"] is not None else "—"
            met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "—"
            lines.append(
                f"| {name} | {r['figure']} | {fmt(r['value'])} {r['unit']} | {base} | {ratio} | {r['target'] or '—'} "
                f"| {met} |"
            )
        if code != 0:
            lines.append(f"| {name} | exit code {code} (figures above are partial) | — | — | — | — | — |")
    lines.append(END)
    return "\n".join(lines)


def update_doc(block: str) -> None:
    text = DOC.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:  # first run: the table goes after the introduction (before the first "## " section)
        marker = text.find("\n## ")
        cut = marker + 1 if marker >= 0 else len(text)
        text = text[:cut] + "## Figures table\n\n" + block + "\n\n" + text[cut:]
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-docs", action="store_true", help="rewrite the figures table of performance.md")
    parser.add_argument("--only", nargs="*", default=[], help="bench names (file stems) to run")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    load_before = os.getloadavg()[0]
    runs = []
    for script in scripts(args.only):
        print(f"== {script.name}", flush=True)
        code, results, seconds = run(script, extra)
        runs.append((script.stem, code, results, seconds))
    command = "make bench" if args.update_docs and not args.only else " ".join(["bench/run_all.py", *sys.argv[1:]])
    block = table(runs, command, (load_before, os.getloadavg()[0]))
    print(block)
    if args.update_docs:
        update_doc(block)
        print(f"updated {DOC.relative_to(HERE.parent)}")
    return 1 if any(code != 0 for _, code, _, _ in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
