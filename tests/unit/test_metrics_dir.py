"""The multiprocess metrics folder: devstack empties it once for every process it starts, gunicorn leaves a
shared one alone, and a finished process's live gauges go while its counters stay."""

from __future__ import annotations

import runpy

from billing_project import devstack


def test_clean_removes_only_metric_files(tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_11.db").write_bytes(b"x")
    (folder / "gauge_liveall_11.db").write_bytes(b"x")
    (folder / "notes.txt").write_text("keep")
    devstack.clean_metrics_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    devstack.clean_metrics_dir(tmp_path / "new")  # created when missing
    assert (tmp_path / "new").is_dir()


def test_a_finished_process_keeps_its_counters_and_loses_its_live_gauges(tmp_path):
    for name in ("counter_42.db", "gauge_liveall_42.db", "gauge_livesum_42.db", "gauge_liveall_43.db"):
        (tmp_path / name).write_bytes(b"x")
    devstack.mark_metrics_dead({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, 42)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_42.db", "gauge_liveall_43.db"]
    devstack.mark_metrics_dead({}, 43)  # no folder, nothing to do
    assert (tmp_path / "gauge_liveall_43.db").exists()


def test_gunicorn_empties_its_own_folder_but_not_a_shared_one(tmp_path, monkeypatch):
    (tmp_path / "counter_7.db").write_bytes(b"x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("BILLING_METRICS_DIR_SHARED", "1")
    conf = runpy.run_path(str(devstack.GUNICORN_CONF))
    conf["on_starting"](None)
    assert (tmp_path / "counter_7.db").exists()  # Celery may have written it already
    monkeypatch.delenv("BILLING_METRICS_DIR_SHARED")
    conf["on_starting"](None)
    assert not (tmp_path / "counter_7.db").exists()
