"""Browser tests: Python Playwright driving Debian's chromium (installed by `make sysdeps`, never
downloaded), headless, against pytest-django's live_server.

- The browser: /usr/bin/chromium with the flags below (pytest-playwright's browser_type_launch_args).
- Failures keep a screenshot (pytest-playwright's --screenshot only-on-failure, into
  tests/browser/artifacts, git-ignored; set in pyproject.toml's addopts).
- Successes save a screenshot of each main page (`shot`) into tests/browser/artifacts/pages/ (git-ignored),
  or, with CONSOLE_DOCS_SHOTS=1 (`make docs-shots`), into docs/console/ for docs/console.md: a plain test run
  never rewrites tracked files.
- live_server runs transactional tests, which flush the groups migrations created: the `roles` fixture
  recreates them (sync_role_permissions); users log in through a session cookie set on the context.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

# Imported for their fixtures: a deployed SubscriptionPass on the session anvil and its catalog rows.
from tests.integration.lifecycle.conftest import chain, world  # noqa: F401

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # live_server + Playwright's event loop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "console" if os.environ.get("CONSOLE_DOCS_SHOTS") else ROOT / "tests/browser/artifacts/pages"


def pytest_collection_modifyitems(config, items):
    if Path(CHROMIUM).exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: `make sysdeps` installs Debian's chromium")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1440, "height": 900}, "locale": "en-US"}


@pytest.fixture
def as_user(live_server, context):
    """as_user(user) -> a Playwright page logged in as `user` (a session cookie, no login form round trip)."""

    def login(user):
        client = Client()
        client.force_login(user)
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    return login


@pytest.fixture
def shot():
    """shot(page, name): keep a screenshot of a main page (only reached on success)."""

    def take(page, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)

    return take
