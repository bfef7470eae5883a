"""The one place billing services enqueue Celery tasks.

A message is only a trigger (the work is a database row written first; beat sweeps pick up what a lost
message left behind), so it is sent after the caller's transaction commits. Tasks are named, not imported:
`billing.tasks` calls the services, and the services never import `billing.tasks` back (no import cycle;
`.importlinter` checks it).
"""

from __future__ import annotations

from django.db import transaction

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
