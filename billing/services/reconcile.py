"""Reconciliation: the ledger against the chain, for one contract.

- Every `Paid`, `Refunded` and `Withdrawn` log of the contract (in the block range) has its ledger effect:
  the order's PaymentTransaction paid with that transaction hash and amount (confirmed, refunded or
  unmatched), the order refunded by that transaction, the withdrawal recorded as a ChainEvent.
- No ledger effect lacks its log: every paid row of the range has its `Paid` log, every refund and recorded
  withdrawal of the range its `Refunded` / `Withdrawn` log.
- Over the whole history (no --from-block), the contract's balance of each token at the checked block equals
  what the ledger says it holds: paid (confirmed + refunded + unmatched) − refunded − withdrawn.

The range ends at the network's applicable block (confirmation policy) unless given: a payment the ledger
may not have applied yet is not a difference. Reads only; `manage.py billing_reconcile` prints the result,
the daily beat task (`contracts_reconcile`) sends ops a notice when anything differs.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, Q, Sum
from eth_utils import to_checksum_address

from billing.chain.abi import event_topics
from billing.fields import ZERO_ADDRESS
from billing.models import ChainEvent, PaymentContract, PaymentTransaction, Token, TxStatus

PAID_STATUSES = (TxStatus.CONFIRMED, TxStatus.REFUNDED, TxStatus.UNMATCHED)


@dataclass(frozen=True)
class Difference:
    kind: str  # paid_not_in_ledger | paid_differs | payment_without_log | refund_not_in_ledger | ...
    detail: str
    ref: str = ""  # tx hash / transaction id the operator looks up

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" + (f" [{self.ref}]" if self.ref else "")


@dataclass
class ReconcileReport:
    contract: str
    from_block: int
    to_block: int
    logs: int = 0
    ledger_rows: int = 0
    balances: dict[str, dict] = field(default_factory=dict)  # symbol -> {"chain", "ledger"}
    balance_checked: bool = False
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def digest(self) -> str:
        """Same differences, same digest: the daily notice is not raised again for an unchanged finding."""
        text = "\n".join(sorted(str(d) for d in self.differences))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _token_key(address: str | None) -> str:
    return to_checksum_address(address) if address and address != ZERO_ADDRESS else ""


def _balance_at(client, holder: str, token: Token, block: int) -> int:
    tag = hex(block)
    if token.is_native:
        return int(client.call("eth_getBalance", [holder, tag]), 16)
    data = "0x70a08231" + holder[2:].lower().rjust(64, "0")  # balanceOf(address)
    answer = client.call("eth_call", [{"to": token.address, "data": data}, tag])
    return int(answer, 16) if answer and answer != "0x" else 0


def contract_reconcile(
    *,
    contract: PaymentContract,
    from_block: int | None = None,
    to_block: int | None = None,
    check_balances: bool | None = None,
    client=None,
) -> ReconcileReport:
    """Compare the ledger with the chain for `contract` over [from_block, to_block] (defaults: the deployment
    block, the applicable block). Balances (always over the whole history, at `to_block`, in SQL sums) are
    checked by default only without `from_block`. Raises the chain client's RpcError when the chain cannot
    answer."""
    from billing.chain.confirmation import applicable_block
    from billing.chain.rpc import ChainClient

    network = contract.network
    client = client or ChainClient.for_network(network, contract=contract)
    full_history = from_block is None
    start = contract.deployment_block if from_block is None else from_block
    end = applicable_block(network, client) if to_block is None else to_block
    report = ReconcileReport(contract=contract.slug, from_block=start, to_block=end)
    if end < start:
        return report
    paid, refunded, withdrawn = _chain_logs(contract, client, start, end)
    report.logs = len(paid) + len(refunded) + len(withdrawn)
    in_range = Q(block_number__gte=start, block_number__lte=end)
    orders = {str(o.args["orderId"]).lower() for o in paid + refunded}
    rows = {
        tx.order_id: tx
        for tx in PaymentTransaction.objects.filter(contract=contract)
        .filter(Q(order_id__in=orders) | (in_range & Q(status__in=PAID_STATUSES)))
        .select_related("token")
    }
    report.ledger_rows = len(rows)

    # Chain -> ledger.
    diffs = report.differences
    diffs += _paid_not_in_ledger(paid, rows)
    diffs += _refunds_not_in_ledger(refunded, rows)
    recorded = {
        (e.tx_hash, e.log_index): e
        for e in ChainEvent.objects.filter(contract=contract, name="Withdrawn", removed=False).filter(in_range)
    }
    diffs += [
        Difference("withdrawal_not_in_ledger", f"Withdrawn log at block {o.block_number}", o.tx_hash)
        for o in withdrawn
        if (o.tx_hash, o.log_index) not in recorded
    ]

    # Ledger -> chain.
    diffs += _payments_without_log(rows, paid, start, end)
    diffs += _refunds_without_log(contract, refunded, start, end, full_history=full_history)
    withdrawn_keys = {(o.tx_hash, o.log_index) for o in withdrawn}
    diffs += [
        Difference(
            "withdrawal_without_log", f"recorded withdrawal at block {event.block_number} has no log", event.tx_hash
        )
        for key, event in recorded.items()
        if key not in withdrawn_keys
    ]

    if full_history if check_balances is None else check_balances:
        _check_balances(report, contract, client, end)
    return report


def _chain_logs(contract: PaymentContract, client, start: int, end: int) -> tuple[list, list, list]:
    """The contract's Paid, Refunded and Withdrawn logs in [start, end], decoded, in one getLogs."""
    from billing.chain.logs import observed_from_raw

    topics = event_topics(contract.abi, ("Paid", "Refunded", "Withdrawn"))
    raw = client.get_logs(address=contract.address, from_block=start, to_block=end, topics=[list(topics.values())])
    logs = [o for o in (observed_from_raw(contract.network.chain_id, contract.abi, r) for r in raw) if o is not None]
    return (
        [o for o in logs if o.name == "Paid"],
        [o for o in logs if o.name == "Refunded"],
        [o for o in logs if o.name == "Withdrawn"],
    )


def _paid_not_in_ledger(paid: list, rows: dict[str, PaymentTransaction]) -> list[Difference]:
    """Each Paid log has its paid row, with the same hash, amount and token, not under review."""
    diffs = []
    for o in paid:
        order = str(o.args["orderId"]).lower()
        tx = rows.get(order)
        if tx is None or tx.status not in (*PAID_STATUSES, TxStatus.NEEDS_REVIEW):
            status = tx.status if tx else "no row"
            diffs.append(
                Difference(
                    "paid_not_in_ledger", f"Paid log of order {order} at block {o.block_number} ({status})", o.tx_hash
                )
            )
            continue
        problems = []
        if tx.tx_hash != o.tx_hash:
            problems.append(f"tx hash {tx.tx_hash} != {o.tx_hash}")
        if tx.amount != int(o.args["amount"]):
            problems.append(f"amount {tx.amount} != {int(o.args['amount'])}")
        if _token_key(tx.token.address) != _token_key(o.args.get("token")):
            problems.append(f"token {tx.token.symbol} != {o.args.get('token')}")
        if tx.status == TxStatus.NEEDS_REVIEW:
            problems.append("under review although the payment is on chain")
        if problems:
            diffs.append(Difference("paid_differs", f"transaction {tx.pk}: " + "; ".join(problems), o.tx_hash))
    return diffs


def _refunds_not_in_ledger(refunded: list, rows: dict[str, PaymentTransaction]) -> list[Difference]:
    """Each Refunded log has its refunded row, with the same refund hash and amount."""
    diffs = []
    for o in refunded:
        order = str(o.args["orderId"]).lower()
        tx = rows.get(order)
        if tx is None or tx.status != TxStatus.REFUNDED:
            status = tx.status if tx else "no row"
            diffs.append(Difference("refund_not_in_ledger", f"Refunded log of order {order} ({status})", o.tx_hash))
        elif tx.refund_tx_hash and tx.refund_tx_hash.lower() != o.tx_hash:
            diffs.append(
                Difference("refund_differs", f"transaction {tx.pk}: refund hash {tx.refund_tx_hash}", o.tx_hash)
            )
        elif tx.amount != int(o.args["amount"]):
            diffs.append(
                Difference(
                    "refund_differs", f"transaction {tx.pk}: amount {tx.amount} != {o.args['amount']}", o.tx_hash
                )
            )
    return diffs


def _payments_without_log(rows: dict[str, PaymentTransaction], paid: list, start: int, end: int) -> list[Difference]:
    """Each confirmed or refunded row paid in [start, end] has its Paid log (unmatched rows may be plain
    transfers)."""
    paid_keys = {(str(o.args["orderId"]).lower(), o.tx_hash) for o in paid}
    diffs = []
    for tx in rows.values():
        checked = tx.status in (TxStatus.CONFIRMED, TxStatus.REFUNDED)
        in_blocks = tx.block_number is not None and start <= tx.block_number <= end
        if checked and in_blocks and (tx.order_id, tx.tx_hash) not in paid_keys:
            diffs.append(
                Difference("payment_without_log", f"transaction {tx.pk} ({tx.status}) has no Paid log", tx.tx_hash)
            )
    return diffs


def _refunds_without_log(
    contract: PaymentContract, refunded: list, start: int, end: int, *, full_history: bool
) -> list[Difference]:
    """Each row refunded in [start, end] (over the whole history: also those with no recorded refund log at
    all) has its Refunded log."""
    refund_orders = {str(o.args["orderId"]).lower() for o in refunded}
    refund_in = ChainEvent.objects.filter(
        transaction=OuterRef("pk"), name="Refunded", removed=False, block_number__gte=start, block_number__lte=end
    )
    refunded_rows = PaymentTransaction.objects.filter(contract=contract, status=TxStatus.REFUNDED)
    if full_history:
        any_refund = ChainEvent.objects.filter(transaction=OuterRef("pk"), name="Refunded", removed=False)
        refunded_rows = refunded_rows.filter(Exists(refund_in) | ~Exists(any_refund))
    else:
        refunded_rows = refunded_rows.filter(Exists(refund_in))
    return [
        Difference(
            "refund_without_log", f"transaction {tx.pk} is refunded without a Refunded log", tx.refund_tx_hash or ""
        )
        for tx in refunded_rows.only("pk", "order_id", "refund_tx_hash")
        if tx.order_id not in refund_orders
    ]


def _check_balances(report: ReconcileReport, contract: PaymentContract, client, block: int) -> None:
    """Per token: the chain's balance at `block` == paid − refunded − withdrawn in the ledger up to it, each a
    SQL sum per token (no ledger row is loaded)."""
    held: dict[int, int] = defaultdict(int)
    up_to = PaymentTransaction.objects.filter(contract=contract, block_number__lte=block)
    for token_id, total in _sums(up_to.filter(status__in=PAID_STATUSES), "token_id"):
        held[token_id] += total
    refunded_later = ChainEvent.objects.filter(
        transaction=OuterRef("pk"), name="Refunded", removed=False, block_number__gt=block
    )
    for token_id, total in _sums(up_to.filter(status=TxStatus.REFUNDED).exclude(Exists(refunded_later)), "token_id"):
        held[token_id] -= total
    tokens = list(Token.objects.filter(network=contract.network))
    by_address = {_token_key(t.address): t for t in tokens}
    withdrawn = ChainEvent.objects.filter(contract=contract, name="Withdrawn", removed=False, block_number__lte=block)
    for address, total in _sums(withdrawn, "token_address"):
        token = by_address.get(_token_key(address))
        if token is not None:
            held[token.pk] -= total
    report.balance_checked = True
    for token in tokens:
        chain = _balance_at(client, contract.address, token, block)
        ledger = held.get(token.pk, 0)
        report.balances[token.symbol] = {"chain": chain, "ledger": ledger}
        if chain != ledger:
            report.differences.append(
                Difference(
                    "balance_differs",
                    f"{token.symbol}: chain holds {chain}, ledger says {ledger} (difference {chain - ledger})",
                )
            )


def _sums(queryset, key: str) -> list[tuple]:
    rows = queryset.order_by().values_list(key).annotate(total=Sum("amount"))
    return [(k, int(total or 0)) for k, total in rows]


DAILY_WINDOW_DAYS = 2  # a day's logs plus a day of margin: a skipped run still leaves no gap


def _daily_start(contract: PaymentContract) -> int | None:
    """First block of the daily window (None: from the deployment), from the follower's cursor and the
    network's block time; no cursor yet -> the whole history."""
    from billing.models import ChainCursor

    cursor = ChainCursor.objects.filter(contract=contract).first()
    if cursor is None:
        return None
    blocks = DAILY_WINDOW_DAYS * 86400 // max(contract.network.block_time_seconds, 1)
    return max(contract.deployment_block, cursor.last_block - blocks)


def contracts_reconcile_all(*, now=None) -> dict[str, int]:
    """The daily run: every enabled contract; the logs of the last DAILY_WINDOW_DAYS (counted back from the
    follower's cursor with the network's block time; the whole history before the follower has a cursor)
    compared both ways, and the balances over the whole history (SQL sums). A contract with differences
    raises one ops notice per day and finding (`reconcile_difference`); one whose chain cannot be read a
    sweep error. Returns slug -> number of differences (-1: not checked). `billing_reconcile` without
    --from-block checks the whole history."""
    from django.db import transaction
    from django.utils import timezone

    from billing.services.notices import ops_notice, sweep_error_notice

    now = now or timezone.now()
    out: dict[str, int] = {}
    for contract in PaymentContract.objects.filter(enabled=True).exclude(address="").select_related("network"):
        try:
            report = contract_reconcile(contract=contract, from_block=_daily_start(contract), check_balances=True)
        except Exception as exc:  # one contract's chain down does not stop the others
            sweep_error_notice(sweep="reconcile", subject=contract.slug, error=f"{type(exc).__name__}: {exc}")
            out[contract.slug] = -1
            continue
        out[contract.slug] = len(report.differences)
        if report.differences:
            shown = [str(d) for d in report.differences[:20]]
            with transaction.atomic():
                ops_notice(
                    kind="reconcile_difference",
                    key=f"reconcile:{contract.slug}:{now:%Y-%m-%d}:{report.digest()}",
                    title=f"Ledger and chain differ for {contract.slug}: {len(report.differences)} difference(s)",
                    body="\n".join(shown)
                    + f"\nRun `manage.py billing_reconcile --contract {contract.slug}` for the full list.",
                    data={
                        "contract": contract.slug,
                        "differences": len(report.differences),
                        "to_block": report.to_block,
                        "kinds": sorted({d.kind for d in report.differences}),
                    },
                )
    return out
