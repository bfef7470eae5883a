"""billing_project.authentication.TokenAuthentication (the API's token lookup as one statement written once per
process) answers exactly as DRF's TokenAuthentication: the same user and token, the same refusals."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework import authentication as drf
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from billing_project.authentication import TokenAuthentication

pytestmark = pytest.mark.django_db


def _outcome(auth, key):
    try:
        user, token = auth.authenticate_credentials(key)
    except AuthenticationFailed as exc:
        return ("refused", str(exc.detail), exc.status_code)
    fields = [f.attname for f in get_user_model()._meta.concrete_fields]
    return (
        {f: getattr(user, f) for f in fields},
        (token.key, token.user_id, token.created),
        token.user is user,
    )


def test_same_answers_as_drf(django_assert_num_queries):
    user = get_user_model().objects.create_user(username="t-user", password="x", email="t@example.com")
    gone = get_user_model().objects.create_user(username="t-gone", password="x", is_active=False)
    keys = [Token.objects.create(user=user).key, Token.objects.create(user=gone).key, "0" * 40, ""]
    ours, theirs = TokenAuthentication(), drf.TokenAuthentication()
    for key in keys:
        assert _outcome(ours, key) == _outcome(theirs, key), key
    assert _outcome(ours, keys[0])[0]["username"] == "t-user"
    assert _outcome(ours, keys[1]) == ("refused", "User inactive or deleted.", 401)
    assert _outcome(ours, keys[2]) == ("refused", "Invalid token.", 401)
    with django_assert_num_queries(1):  # the token with its user, one statement
        ours.authenticate_credentials(keys[0])


def test_an_api_request_with_a_bad_token_is_refused(client):
    url = "/v1/billing/checkout/00000000-0000-0000-0000-000000000000"
    response = client.get(url, HTTP_AUTHORIZATION="Token " + "f" * 40)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
