"""The one place billing services enqueue Celery tasks.

A message is only a trigger (the work is a database row written first; beat sweeps pick up what a lost
message left behind), so it is sent after the caller's transaction commits. Tasks are named, not imported:
`billing.tasks` calls the services, and the services never import `billing.tasks` back (no import cycle;
`.importlinter` checks it).
"""

from __future__ import annotations

from django.db import connection, transaction

from billing_project.celery import app


def enqueue_on_commit(task_name: str, *calls: tuple, countdown: float | None = None) -> None:
    """After the current transaction commits, send `task_name` once per argument tuple in `calls`."""
    if not calls:
        return

    def send() -> None:
        task = app.tasks[task_name]
        for args in calls:
            task.apply_async(args, countdown=countdown)

    transaction.on_commit(send)


def enqueue_once_on_commit(task_name: str) -> None:
    """After the current transaction commits, send `task_name` (no arguments) once, however many times this is
    called in the transaction: a sweep trigger (outbox_sweep finds every due row), not one message per row.
    A hook already waiting in this transaction is found among the connection's commit hooks, so a call inside a
    savepoint that rolls back does not swallow the trigger of a later call."""
    for _, func, _ in connection.run_on_commit:
        if getattr(func, "sends_once", None) == task_name:
            return

    def send() -> None:
        app.tasks[task_name].apply_async(())

    send.sends_once = task_name
    transaction.on_commit(send)
