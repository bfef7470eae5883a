"""The webhook deliveries' claim has a queue of its own that every worker consumes (billing_project.settings):
a burst of outbox deliveries on the default queue does not hold it back."""

from __future__ import annotations

from billing_project.celery import app


def test_the_inbound_claim_goes_to_its_own_queue_and_the_rest_to_the_default():
    router = app.amqp.router
    assert router.route({}, "billing.tasks.inbound_events_claim")["queue"].name == "ingest"
    for task in ("billing.tasks.outbox_deliver", "billing.tasks.contract_sync_task", "billing.tasks.outbox_sweep"):
        assert router.route({}, task)["queue"].name == "celery", task


def test_a_worker_started_without_queues_consumes_both():
    # What `celery worker` does without -Q: it consumes every queue of task_queues.
    assert set(app.amqp.queues) == {"celery", "ingest"}
    assert app.conf.task_default_queue == "celery"
