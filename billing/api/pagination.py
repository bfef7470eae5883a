"""Cursor pagination: stable under inserts and no COUNT(*) over the ledger."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class NewestFirstCursorPagination(CursorPagination):
    """Ledger-like lists (history, transactions, notifications, outbox): newest first, id breaks ties."""

    ordering = ("-created_at", "-id")
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 200


class ChainEventCursorPagination(CursorPagination):
    """A contract's event timeline in chain order, newest block first."""

    ordering = ("-block_number", "-log_index", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class AuditCursorPagination(CursorPagination):
    ordering = ("-timestamp", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
