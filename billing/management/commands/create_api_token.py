"""`manage.py create_api_token <username> [--rotate]`: print the user's DRF API token."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Print a user's API token (Authorization: Token <key>), creating it if missing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--rotate", action="store_true", help="Replace the existing token; the old key stops working at once."
        )

    def handle(self, *args, username: str, rotate: bool, **options) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: username})
        except user_model.DoesNotExist:
            raise CommandError(f"User '{username}' does not exist.")
        if not user.is_active:
            raise CommandError(f"User '{username}' is inactive; activate the account before issuing a token.")
        with transaction.atomic():
            if rotate:
                Token.objects.filter(user=user).delete()
            token, created = Token.objects.get_or_create(user=user)
        # Only the key on stdout, so `$(manage.py create_api_token alice)` works; the rest goes to stderr.
        self.stdout.write(token.key)
        if options["verbosity"] > 1 or rotate or created:
            state = "rotated" if rotate else ("created" if created else "existing")
            self.stderr.write(f"{state} token for {username}")
