"""bench/run_all.py collects the BENCH_RESULT lines benches print and rewrites docs/performance.md's table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def run_all(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nIntro.\n\n## Checkout\n\nHand-written analysis.\n")
    monkeypatch.setattr(module, "DOC", doc)
    return module, doc


def fake_bench(tmp_path, body: str) -> Path:
    script = tmp_path / "fake.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(BENCH)!r})\nfrom _report import result\n{body}\n")
    return script


def test_results_become_rows_and_the_table_is_replaced_not_duplicated(run_all, tmp_path):
    module, doc = run_all
    script = fake_bench(
        tmp_path,
        'print("a table for people")\n'
        'result("fake", "ingest", 700.0, unit="req/s", baseline=1400.0, baseline_label="bare view",'
        ' target=">= 50 % of baseline", met=True, better="higher")',
    )
    code, results, _ = module.run(script, [])
    assert code == 0 and [r["figure"] for r in results] == ["ingest"] and results[0]["ratio"] == 0.5

    for _ in range(2):  # a second make bench replaces the block
        module.update_doc(module.table([("fake", code, results, 1.0)], "make bench", (1.0, 2.0)))
    text = doc.read_text()
    assert text.count(module.START) == 1 and text.count(module.END) == 1
    assert "| fake | ingest | 700 req/s | 1,400 req/s (bare view) | 0.50x | >= 50 % of baseline | yes |" in text
    assert "Hand-written analysis." in text and text.index(module.END) < text.index("## Checkout")


def test_a_failed_bench_keeps_a_row_saying_so(run_all, tmp_path):
    module, doc = run_all
    code, results, seconds = module.run(fake_bench(tmp_path, "sys.exit(3)"), [])
    block = module.table([("broken", code, results, seconds)], "make bench", (0.0, 0.0))
    assert code == 3 and "| broken | failed (exit 3)" in block


def test_every_bench_reports_its_headline_figures():
    """Each bench in bench/ calls result() (or _hotpath.report()): make bench's table has rows for each."""
    missing = [
        p.name
        for p in sorted(BENCH.glob("*.py"))
        if not p.name.startswith("_")
        and p.name != "run_all.py"
        and not any(call in p.read_text() for call in ("result(", "hp.report("))
    ]
    assert missing == [], f"benches that report nothing: {missing}"
