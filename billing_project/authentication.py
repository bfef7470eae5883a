"""DRF's TokenAuthentication with its lookup as one statement written once per process: the same query (the
token joined to its user), the same answers (401 "Invalid token." / "User inactive or deleted."), without the
ORM building and compiling that SELECT on every API request (about a tenth of a checkout's CPU)."""

from __future__ import annotations

from django.db import connections, router
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions


def _columns(model) -> list:
    return list(model._meta.concrete_fields)


def _plain(field, connection) -> bool:
    """Whether the driver's value is the field's value (no from_db_value, no backend converter)."""
    col = field.get_col(field.model._meta.db_table)
    return not hasattr(field, "from_db_value") and not connection.ops.get_db_converters(col)


def _plain(field, connection) -> bool:
    """Whether the driver's value is the field's value (no from_db_value, no backend converter)."""
    col = field.get_col(field.model._meta.db_table)
    return not hasattr(field, "from_db_value") and not connection.ops.get_db_converters(col)


class TokenAuthentication(authentication.TokenAuthentication):
    _plans: dict = {}

    def _plan(self, model, alias: str):
        """(sql, token fields, user fields), or None when a column needs a converter (then the ORM reads it)."""
        key = (model, alias)
        if key not in self._plans:
            connection = connections[alias]
            user_model = model._meta.get_field("user").related_model
            token_fields, user_fields = _columns(model), _columns(user_model)
            plain = all(_plain(f, connection) for f in token_fields + user_fields)
            qn = connection.ops.quote_name
            t, u = qn(model._meta.db_table), qn(user_model._meta.db_table)
            cols = [f"t.{qn(f.column)}" for f in token_fields] + [f"u.{qn(f.column)}" for f in user_fields]
            user_fk = qn(model._meta.get_field("user").column)
            user_pk = qn(user_model._meta.pk.column)
            token_pk = qn(model._meta.pk.column)
            sql = (
                f"SELECT {', '.join(cols)} FROM {t} t INNER JOIN {u} u ON u.{user_pk} = t.{user_fk}"  # noqa: S608
                f" WHERE t.{token_pk} = %s"
            )
            self._plans[key] = (sql, token_fields, user_fields) if plain else None
        return self._plans[key]

    def authenticate_credentials(self, key):
        model = self.get_model()
        alias = router.db_for_read(model)
        plan = self._plan(model, alias)
        if plan is None:
            return super().authenticate_credentials(key)
        sql, token_fields, user_fields = plan
        with connections[alias].cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        n = len(token_fields)
        user_model = user_fields[0].model
        user = user_model.from_db(alias, [f.attname for f in user_fields], row[n:])
        token = model.from_db(alias, [f.attname for f in token_fields], row[:n])
        token.user = user
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (user, token)
