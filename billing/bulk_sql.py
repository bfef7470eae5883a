"""Helpers of the bulk SQL the chain follower's batches run (payments, subscriptions, outbox): rows passed as one
JSON document (`json_to_recordset` on the server: one parameter, no per-element quoting in Python), and a
cursor that reads timestamps with the C parser of `datetime.fromisoformat` instead of Django's Python
timestamptz loader (about 10 us a value, 12,000 values in a 2,000-payment batch)."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from psycopg.adapt import Loader


class _IsoTimestamptzLoader(Loader):
    """timestamptz in text form as PostgreSQL writes it with DateStyle ISO ('2026-12-01 22:42:10.5+00'), the
    DateStyle Django's connections use: an aware datetime (UTC in a UTC session, as Django's loader gives)."""

    def load(self, data) -> datetime:
        return datetime.fromisoformat(bytes(data).decode())


@contextmanager
def bulk_cursor() -> Iterator:
    """connection.cursor() whose reads of timestamptz use `_IsoTimestamptzLoader` (this cursor only)."""
    with connection.cursor() as cursor:
        if (connection.connection.info.parameter_status("DateStyle") or "").startswith("ISO"):
            cursor.cursor.adapters.register_loader("timestamptz", _IsoTimestamptzLoader)
        yield cursor


def json_rows(rows: list) -> str:
    """Rows (dicts) as one compact JSON document for json_to_recordset."""
    return json.dumps(rows, separators=(",", ":"), cls=DjangoJSONEncoder)


def json_list(values) -> str:
    """A list of plain values as a JSON array, for `column IN (SELECT json_array_elements_text(%s::json))`."""
    return json.dumps(list(values), separators=(",", ":"))


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the duration of a follower run. A 2,000-payment batch allocates
    enough containers that live through the batch (decoded logs, rows, payloads) to set off full collections,
    and each one walks every object of the process (Django, Celery, web3: about 0.15 s a collection here)
    while the batch's garbage is freed by reference counting anyway. The collector is switched back on
    afterwards (if it was on); its next collection takes whatever cycles the run left."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_frozen = False


def freeze_startup_heap() -> None:
    """Once per process: move the objects the process holds when its first follower run starts (the imported
    modules, Django's and Celery's state) to the collector's permanent generation (`gc.freeze`), so later full
    collections walk only what was allocated since, not the whole framework. Garbage cycles alive at that moment
    stay in memory (once, at start-up)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()
