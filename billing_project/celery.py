"""Celery application.

Messages are only triggers: every piece of work that must happen is a database row first, and beat
sweeps pick up what a lost message or a killed worker left behind. That is what makes the embedded
filesystem broker (which acks on fetch) safe.

Metrics: with PROMETHEUS_MULTIPROC_DIR set (devstack sets it for every process it starts; set it yourself
for workers you run elsewhere, to the folder the web server reads), every pool process writes its counters
there and the web server's /metrics adds them to its own. Task runs are counted here by outcome; a beat
sweep that raises is a sweep error; a pool process that exits has its live gauges removed.
"""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")

app = Celery("billing_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _count(task, outcome: str) -> None:
    from billing import metrics

    name = getattr(task, "name", None) or str(task)
    metrics.TASKS.labels(task=name, outcome=outcome).inc()
    if outcome == "failure" and name in _beat_tasks():
        metrics.sweep_error(name.rsplit(".", 1)[-1])


def _beat_tasks() -> set[str]:
    schedule = app.conf.beat_schedule or {}
    return {entry["task"] for entry in schedule.values() if isinstance(entry, dict) and "task" in entry}


@signals.task_success.connect(dispatch_uid="billing_metrics_task_success")
def _task_success(sender=None, **kwargs):
    _count(sender, "success")


@signals.task_failure.connect(dispatch_uid="billing_metrics_task_failure")
def _task_failure(sender=None, **kwargs):
    _count(sender, "failure")


@signals.task_retry.connect(dispatch_uid="billing_metrics_task_retry")
def _task_retry(sender=None, **kwargs):
    _count(sender, "retry")


@signals.worker_process_shutdown.connect(dispatch_uid="billing_metrics_process_dead")
def _pool_process_exit(pid=None, **kwargs):
    # Like gunicorn's child_exit: a gone process's "live" gauges must stop counting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
