"""Structured JSON logging (structlog) with a request id bound to every line of a request.

Secrets never reach a log line: values under secret-looking keys are masked, and URLs are cut to
scheme and host (RPC URLs carry provider keys in their paths).
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from typing import Any

import structlog

SECRET_KEY_RE = re.compile(r"(secret|password|private|signer_key|api_key|token|authorization)", re.I)
# scheme://[userinfo@]host[:port][/path?query#fragment], any scheme, any case, IPv6 hosts in brackets.
URL_RE = re.compile(
    r"\b([a-z][a-z0-9+.-]*)://(?:[^/\s@?#]*@)?(\[[0-9a-f:.]+\](?::\d+)?|[^/\s?#:@\[\]]+(?::\d+)?)([/?#][^\s\"']*)?",
    re.I,
)
HEX_KEY_RE = re.compile(r"\b(0x)?[0-9a-fA-F]{64}\b")
# urllib3/requests name the request path alone ("Max retries exceeded with url: /services/T0/B0/xoxb..."):
# a webhook URL's token lives exactly there.
BARE_PATH_RE = re.compile(r"(\burl: )(/[^\s]*)", re.I)


def mask_url(url: str) -> str:
    """The one URL masker, for free text and single URLs alike: every URL in `url` keeps only its scheme,
    host and port; user info is dropped and a path, query or fragment becomes /**** (keys hide in all three):
    https://user:key@host/v3/key?k=1 -> https://host/****, https://user:key@host -> https://host.
    Also masks the bare request path urllib3 puts in its errors ("with url: /path?query" -> "url: /****")."""

    def repl(m: re.Match) -> str:
        rest = m.group(3) or ""
        return f"{m.group(1)}://{m.group(2)}" + ("/****" if rest not in ("", "/") else "")

    url = URL_RE.sub(repl, url)
    return BARE_PATH_RE.sub(lambda m: m.group(1) + ("/****" if m.group(2) != "/" else "/"), url)


def error_text(exc: BaseException, *, limit: int = 2000) -> str:
    """`Type: message` of an exception, URLs masked, cut to `limit`: what may be stored or logged."""
    return mask_url(f"{type(exc).__name__}: {exc}")[:limit]


def _redact(_logger: Any, _name: str, event_dict: dict) -> dict:
    for key, value in list(event_dict.items()):
        if key in ("event", "request_id", "tx_hash", "block_hash", "order_id"):
            continue
        if SECRET_KEY_RE.search(key) and key not in ("token_symbol", "token_id"):
            event_dict[key] = "****"
        elif isinstance(value, str):
            event_dict[key] = mask_url(value)
    if isinstance(event_dict.get("event"), str):
        event_dict["event"] = mask_url(event_dict["event"])
    return event_dict


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "web3", "asyncio", "celery.utils.functional"):
        logging.getLogger(noisy).setLevel("WARNING")


class RequestIdMiddleware:
    """Binds a request id (the caller's X-Request-ID if sane, else a new one) to every log line."""

    header = "HTTP_X_REQUEST_ID"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get(self.header, "")
        request_id = incoming if re.fullmatch(r"[A-Za-z0-9._-]{8,64}", incoming or "") else uuid.uuid4().hex
        request.request_id = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        # Left bound after the response: Django logs 4xx/5xx lines ("Not Found: ...") after the middleware
        # returns, and they belong to this request too. The next request clears it.
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
