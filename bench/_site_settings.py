"""Settings of the bench's gunicorn: the project's own, plus the bare baseline views (bench/_site_urls.py)."""

from billing_project.settings import *  # noqa: F403

ROOT_URLCONF = "_site_urls"
