"""Celery application.

Messages are only triggers: every piece of work that must happen is a database row first, and beat
sweeps pick up what a lost message or a killed worker left behind. That is what makes the embedded
filesystem broker (which acks on fetch) safe.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")

app = Celery("billing_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
