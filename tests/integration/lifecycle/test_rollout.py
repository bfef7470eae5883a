"""Rollout commands (issue 13): signer rotation on a real contract, webhook secret rotation, dead-letter
replay and cursor resync. Each --dry-run changes nothing; each real run does, and leaves an audit entry
naming --actor."""

from __future__ import annotations

import io
import os
import stat

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.chain.artifacts import deploy_artifact
from billing.models import ChainCursor, OutboxDelivery, PaymentTransaction, TransactionStatusChange
from billing.services.chain_sync import contract_sync
from tests import factories as f
from tests.integration.lifecycle.conftest import OWNER, PAYERS, SIGNER, send_steps

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def notes(obj, note: str) -> list[LogEntry]:
    return [
        e
        for e in LogEntry.objects.get_for_object(obj).order_by("id")
        if (e.changes_dict.get("operator_action") or [None, None])[1] == note
    ]


@pytest.fixture
def actor(billing_admin_user):
    return billing_admin_user


def test_signer_rotation_generate_allow_retire(chain, world, actor, tmp_path):
    fresh, receipt = deploy_artifact(chain.w3, OWNER, "SubscriptionPass", OWNER.address, SIGNER.address)
    contract = world.contract
    contract.address, contract.deployment_block = fresh.address, receipt["blockNumber"]
    contract.save()
    slug, key_file = contract.slug, tmp_path / "signer-new"

    assert "would write" in run(
        "billing_rotate_signer", "--contract", slug, "--generate-key", str(key_file), "--dry-run"
    )
    assert not key_file.exists()
    out = run("billing_rotate_signer", "--contract", slug, "--generate-key", str(key_file), "--actor", actor.username)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    from eth_account import Account

    new = Account.from_key(key_file.read_text().strip()).address
    assert new in out and key_file.read_text().strip() not in out
    with pytest.raises(CommandError, match="never overwritten"):
        run("billing_rotate_signer", "--contract", slug, "--generate-key", str(key_file))

    out = run("billing_rotate_signer", "--contract", slug, "--allow", new, "--dry-run")
    assert "would send setSigner" in out and fresh.functions.isSigner(new).call() is False
    out = run("billing_rotate_signer", "--contract", slug, "--allow", new, "--actor", actor.username)
    assert "mined" in out and fresh.functions.isSigner(new).call() is True
    (entry,) = notes(contract, "signer_allowed")
    assert entry.actor == actor and entry.additional_data["address"] == new

    # The old signer is still the one this deployment signs with: retiring it is refused.
    with pytest.raises(CommandError, match="deploy the new key first"):
        run("billing_rotate_signer", "--contract", slug, "--retire", SIGNER.address)
    world_settings_key = key_file.read_text().strip()
    from django.conf import settings

    settings.BILLING_QUOTE_SIGNER_KEY = world_settings_key  # the new key is deployed
    run("billing_rotate_signer", "--contract", slug, "--retire", SIGNER.address, "--dry-run")
    assert fresh.functions.isSigner(SIGNER.address).call() is True
    run("billing_rotate_signer", "--contract", slug, "--retire", SIGNER.address, "--actor", actor.username)
    assert fresh.functions.isSigner(SIGNER.address).call() is False
    assert notes(contract, "signer_retired")[0].actor == actor
    audit = " ".join(str(e.changes) + str(e.additional_data) for e in LogEntry.objects.all())
    assert world_settings_key[2:] not in audit


def test_webhook_secret_rotation(world, actor, tmp_path):
    contract = world.contract
    old = contract.webhook_secret
    target = tmp_path / "whsec"
    out = run("billing_rotate_webhook_secret", "--contract", contract.slug, "--out", str(target), "--dry-run")
    contract.refresh_from_db()
    assert "would set" in out and contract.webhook_secret == old and not target.exists()
    with pytest.raises(CommandError, match="--out"):
        run("billing_rotate_webhook_secret", "--contract", contract.slug)

    out = run(
        "billing_rotate_webhook_secret", "--contract", contract.slug, "--out", str(target), "--actor", actor.username
    )
    contract.refresh_from_db()
    secret = target.read_text().strip()
    assert contract.webhook_secret == secret != old and contract.previous_webhook_secret == old
    assert secret not in out and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert notes(contract, "webhook_secret_rotated")[0].actor == actor
    changed = next(e for e in LogEntry.objects.get_for_object(contract) if "webhook_secret" in e.changes_dict)
    assert changed.actor == actor and changed.changes_dict["webhook_secret"] == ["****", "****"]

    second = tmp_path / "whsec2"
    run("billing_rotate_webhook_secret", "--contract", contract.slug, "--out", str(second), "--drop-previous")
    contract.refresh_from_db()
    assert contract.webhook_secret == second.read_text().strip() and contract.previous_webhook_secret == ""
    audit = " ".join(str(e.changes) + str(e.additional_data) for e in LogEntry.objects.all())
    assert secret not in audit and old not in audit


def test_dead_letter_replay(world, actor):
    dead = [f.OutboxDeliveryFactory(status="dead", attempts=8, max_attempts=8) for _ in range(3)]
    out = run("billing_replay_dead_letters", "--dry-run")
    assert out.count("would replay") == 3
    assert set(OutboxDelivery.objects.values_list("status", flat=True)) == {"dead"}
    out = run("billing_replay_dead_letters", "--delivery", str(dead[0].pk), "--actor", actor.username)
    assert "1 dead letter(s)" in out
    statuses = dict(OutboxDelivery.objects.values_list("pk", "status"))
    assert statuses == {dead[0].pk: "pending", dead[1].pk: "dead", dead[2].pk: "dead"}
    (entry,) = notes(dead[0], "replayed")
    assert entry.actor == actor
    run("billing_replay_dead_letters")  # the rest, without --actor: audited as the command line
    assert set(OutboxDelivery.objects.values_list("status", flat=True)) == {"pending"}
    assert notes(dead[1], "replayed")[0].additional_data["actor"] == "cli"


def test_cursor_resync_reads_again_without_double_effects(chain, world, actor, user_api):
    from tests.integration.lifecycle.conftest import follower_from_head

    follower_from_head(world, chain)
    body = user_api.post("/v1/billing/checkout", {"plan": "eth-pro", "wallet": PAYERS[1].address}, format="json").json()
    (tx_hash,) = send_steps(chain, PAYERS[1], body["payment"])
    paid_block = chain.w3.eth.get_transaction_receipt(tx_hash)["blockNumber"]
    chain.anvil.mine(2)
    contract_sync(contract_id=world.contract.pk)
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    assert tx.status == "confirmed"
    cursor = ChainCursor.objects.get(contract=world.contract)
    at = cursor.last_block
    assert at >= paid_block

    with pytest.raises(CommandError, match="deployed at block"):
        run("billing_resync_cursor", "--contract", world.contract.slug, "--from-block", "0")
    out = run("billing_resync_cursor", "--contract", world.contract.slug, "--from-block", str(paid_block), "--dry-run")
    cursor.refresh_from_db()
    assert "would move" in out and cursor.last_block == at
    run(
        "billing_resync_cursor",
        "--contract",
        world.contract.slug,
        "--from-block",
        str(paid_block),
        "--actor",
        actor.username,
    )
    cursor.refresh_from_db()
    assert cursor.last_block == paid_block - 1
    (entry,) = notes(world.contract, "cursor_resynced")
    assert entry.actor == actor and entry.additional_data["previous_last_block"] == at

    contract_sync(contract_id=world.contract.pk)  # reads the payment's block again
    cursor.refresh_from_db()
    assert cursor.last_block >= at
    assert TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").count() == 1
