"""`manage.py create_api_token`: prints a key that authenticates as the user; rotation invalidates the old."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from tests import factories as f

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def authenticates_as(key: str):
    from rest_framework.authentication import TokenAuthentication

    user, _ = TokenAuthentication().authenticate_credentials(key)
    return user


def test_creates_prints_and_reuses_the_token():
    user = f.UserFactory(username="alice")
    assert not Token.objects.filter(user=user).exists()

    key = run("alice")
    assert len(key) == 40 and "\n" not in key
    assert Token.objects.get(user=user).key == key
    assert authenticates_as(key) == user

    assert run("alice") == key
    assert Token.objects.filter(user=user).count() == 1


def test_prints_an_existing_token():
    user = f.UserFactory(username="bob")
    token = Token.objects.create(user=user)
    assert run("bob") == token.key


def test_rotate_replaces_the_key():
    user = f.UserFactory(username="carol")
    old = run("carol")

    new = run("carol", "--rotate")
    assert new != old
    assert Token.objects.filter(user=user).count() == 1
    assert authenticates_as(new) == user
    with pytest.raises(AuthenticationFailed):
        authenticates_as(old)


def test_rotate_without_a_token_creates_one():
    user = f.UserFactory(username="dave")
    key = run("dave", "--rotate")
    assert Token.objects.get(user=user).key == key


def test_unknown_user_is_a_clear_error():
    with pytest.raises(CommandError, match="User 'nobody' does not exist"):
        run("nobody")
    assert Token.objects.count() == 0


def test_inactive_user_is_refused():
    f.UserFactory(username="gone", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        run("gone")
    assert Token.objects.count() == 0
