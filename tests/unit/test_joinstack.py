"""manage.py joins the running `make run` stack only when DATABASE_URL is unset and its supervisor lives."""

import json
import os

import psutil

from billing_project.joinstack import JOIN_FILE, join_running_stack


def write(data_dir, pid, started):
    env = {"DATABASE_URL": "postgresql://postgres:@/billing?host=/sock", "CELERY_FS_BROKER_DIR": "/b"}
    (data_dir / JOIN_FILE).write_text(json.dumps({"pid": pid, "started": started, "env": env}))


def test_takes_the_running_stacks_values_without_overriding_the_environment(tmp_path):
    write(tmp_path, os.getpid(), psutil.Process().create_time())
    environ = {"BILLING_DEVSTACK_DATA_DIR": str(tmp_path), "CELERY_FS_BROKER_DIR": "/mine"}
    assert join_running_stack(environ) == {"DATABASE_URL": "postgresql://postgres:@/billing?host=/sock"}
    assert environ["CELERY_FS_BROKER_DIR"] == "/mine"


def test_ignores_a_stale_file_and_an_explicit_database_url(tmp_path):
    write(tmp_path, os.getpid(), psutil.Process().create_time() - 100)  # the pid was reused by another process
    environ = {"BILLING_DEVSTACK_DATA_DIR": str(tmp_path)}
    assert join_running_stack(environ) == {} and "DATABASE_URL" not in environ
    write(tmp_path, os.getpid(), psutil.Process().create_time())
    environ = {"BILLING_DEVSTACK_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://elsewhere/db"}
    assert join_running_stack(environ) == {} and environ["DATABASE_URL"] == "postgres://elsewhere/db"
