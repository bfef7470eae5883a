"""Bulk seed for bench/overview.py: a catalog through the ORM, then payments, status history, subscriptions,
operator transactions and withdrawals with one INSERT ... SELECT FROM generate_series each (seconds per
million rows, not the hours a service call per row would take).

The shape follows a subscription business: customers pay monthly, weekly and yearly plans on two mainnets
and a testnet, in a stable token and the native coin, with failures, expiries, refunds, reviews and stray
transfers; each customer's latest confirmed payment backs their subscription. Every random draw comes from
`setseed`, so the same sizes give the same rows.
"""

from __future__ import annotations

from contextlib import contextmanager
from decimal import Decimal

MARKER = "bench-overview"

NETWORKS = [
    # slug, chain id, testnet
    ("bench-mainnet", 1001, False),
    ("bench-l2", 1002, False),
    ("bench-testnet", 1003, True),
]
# plan slug, network, token symbol, interval, price (whole tokens, as text), tier, experiment, variant, weight
PLANS = [
    ("b-starter", "bench-mainnet", "USDC", "month", "5", 1, "", "", 22),
    ("b-pro", "bench-mainnet", "USDC", "month", "15", 2, "b-pricing", "a", 16),
    ("b-pro-b", "bench-mainnet", "USDC", "month", "19", 2, "b-pricing", "b", 12),
    ("b-business", "bench-mainnet", "USDC", "month", "49", 3, "", "", 8),
    ("b-pro-year", "bench-mainnet", "USDC", "year", "150", 2, "b-annual", "a", 4),
    ("b-pro-year-b", "bench-mainnet", "USDC", "year", "144", 2, "b-annual", "b", 4),
    ("b-pro-week", "bench-mainnet", "USDC", "week", "4", 2, "", "", 6),
    ("b-pro-eth", "bench-mainnet", "ETH", "month", "0.005", 2, "", "", 8),
    ("b-l2-pro", "bench-l2", "USDC", "month", "15", 2, "", "", 16),
    ("b-test-pro", "bench-testnet", "USDC", "month", "15", 2, "", "", 4),
]
INTERVAL_SQL = {"day": "1 day", "week": "7 days", "month": "30 days", "year": "365 days"}


def seed(*, payments: int, subscriptions: int, days: int = 365, out=print) -> None:
    """Create the catalog and `payments` ledger rows for `subscriptions` customers, once."""
    import time

    from django.db import connection, transaction

    from billing.services.rollup import revenue_rollup_rebuild

    started = time.monotonic()
    with connection.cursor() as cur:
        _zero_defaults(cur)  # before any row: ALTER TABLE waits for no pending trigger events
    with transaction.atomic():
        catalog = _catalog()
        with connection.cursor() as cur:
            # A fresh database the seed itself filled: foreign keys are right by construction, so their
            # per-row triggers are skipped (superuser only; the bench runs as postgres).
            cur.execute("SET LOCAL session_replication_role = replica")
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute("SELECT setseed(0.4242)")
            user_base = _users(cur, subscriptions)
            # Bulk-load practice: build the big tables' indexes once at the end (a sort each) rather than
            # row by row (random inserts into a dozen B-trees).
            with _indexes_deferred(cur, ("billing_paymenttransaction", "billing_transactionstatuschange")):
                _payments(cur, catalog, payments=payments, users=subscriptions, user_base=user_base, days=days)
                out(f"  payments: {payments} rows ({time.monotonic() - started:.1f}s)")
                _history(cur)
                out(f"  status history ({time.monotonic() - started:.1f}s)")
            out(f"  indexes rebuilt ({time.monotonic() - started:.1f}s)")
            # The replica role skipped the ledger's triggers, the revenue rollup's too: fill it from the rows.
            revenue_rollup_rebuild()
            out(f"  revenue rollup rebuilt ({time.monotonic() - started:.1f}s)")
            _subscriptions(cur, catalog)
            _operator_txs(cur, catalog)
            _withdrawals(cur, catalog, days=days)
            _cursors_and_health(cur, catalog)
            _dead_letters(cur)
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    out(f"  seeded in {time.monotonic() - started:.1f}s")


# The zero value per type for NOT NULL columns that have no database default (Django keeps defaults in
# Python): the INSERT ... SELECT statements below name only the columns the figures need.
_ZEROS = {
    "smallint": "0", "integer": "0", "bigint": "0", "numeric": "0", "boolean": "false", "text": "''",
    "character varying": "''", "jsonb": "'{}'::jsonb", "timestamp with time zone": "now()",
}  # fmt: skip


def _zero_defaults(cur) -> None:
    """Give every NOT NULL column of the bench database's tables without a default its type's zero,
    so a column added by a later migration never breaks seeding (this is the bench's own database)."""
    cur.execute(
        """
        SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = 'public' AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'
        """
    )
    for table, column, data_type in cur.fetchall():
        zero = _ZEROS.get(data_type)
        if zero is not None:
            cur.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET DEFAULT {zero}')


@contextmanager
def _indexes_deferred(cur, tables: tuple[str, ...]):
    """Drop the tables' secondary indexes and unique constraints, run the block, create them again as they were."""
    cur.execute(
        """
        SELECT i.indexrelid::regclass::text, t.relname, pg_get_indexdef(i.indexrelid), c.conname,
               pg_get_constraintdef(c.oid)
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE t.relname = ANY(%s) AND NOT i.indisprimary
        """,
        [list(tables)],
    )
    saved = cur.fetchall()
    for index, table, _, constraint, _ in saved:
        if constraint:
            cur.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{constraint}"')
        else:
            cur.execute(f"DROP INDEX {index}")
    yield
    cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
    for _, table, index_sql, constraint, constraint_sql in saved:
        if constraint:
            cur.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{constraint}" {constraint_sql}')
        else:
            cur.execute(index_sql)


def _catalog() -> dict:
    from billing.demo.seed import MINIMAL_PASS_ABI, placeholder_address
    from billing.models import (
        Network,
        PaymentContract,
        PaymentProvider,
        Plan,
        RpcEndpoint,
        Token,
    )

    networks, tokens, contracts, providers, plans = {}, {}, {}, {}, {}
    for slug, chain_id, testnet in NETWORKS:
        net = Network.objects.create(slug=slug, name=slug, chain_id=chain_id, is_testnet=testnet, enabled=True)
        networks[slug] = net
        # A port nothing listens on: the payouts endpoint's balance reads fail at once and show stale.
        RpcEndpoint.objects.create(network=net, position=0, url="http://127.0.0.1:9/", timeout_seconds=Decimal("1"))
        tokens[(slug, "USDC")] = Token.objects.create(
            network=net, symbol="USDC", address=placeholder_address(f"bench-usdc-{slug}"), decimals=6, usd_estimate=1
        )
        tokens[(slug, "ETH")] = Token.objects.create(
            network=net, symbol="ETH", address="", decimals=18, usd_estimate=Decimal("3000")
        )
        contracts[slug] = PaymentContract.objects.create(
            slug=f"pass-{slug}",
            network=net,
            address=placeholder_address(f"bench-pass-{slug}"),
            abi=MINIMAL_PASS_ABI,
            mint_method="pay",
            burn_method="refund",
        )
        provider = PaymentProvider.objects.create(
            slug=f"evm-{slug}", default_network=net, contract=contracts[slug], priority=10
        )
        provider.networks.set([net])
        provider.supported_tokens.set([tokens[(slug, "USDC")], tokens[(slug, "ETH")]])
        providers[slug] = provider
    for slug, net, symbol, interval, price, tier, experiment, variant, _ in PLANS:
        token = tokens[(net, symbol)]
        plans[slug] = Plan.objects.create(
            slug=slug,
            title=slug,
            interval=interval,
            price_token=token,
            price_amount=int(Decimal(price) * 10**token.decimals),
            price_usd_estimate=Decimal(price) * (token.usd_estimate or 1),
            provider=providers[net],
            contract=contracts[net],
            tier=tier,
            experiment=experiment,
            variant=variant,
        )
    return {"networks": networks, "tokens": tokens, "contracts": contracts, "plans": plans}


def _users(cur, n: int) -> int:
    cur.execute(
        """
        INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,
                               is_active, date_joined)
        SELECT '!', false, 'bench-' || g, '', '', '', false, true, now() FROM generate_series(1, %s) g
        RETURNING id
        """,
        [n],
    )
    ids = [r[0] for r in cur.fetchall()]
    assert ids == list(range(ids[0], ids[0] + n)), "user ids are not contiguous"
    return ids[0]


def _plan_table(catalog: dict) -> str:
    """VALUES rows (lo, hi, plan, token, network, contract, provider, chain, amount, interval, native) that map a
    uniform draw in [0, 1) to a plan by the weights above."""
    total = sum(p[-1] for p in PLANS)
    rows, acc = [], 0
    for slug, net, symbol, interval, *_rest, weight in PLANS:
        plan = catalog["plans"][slug]
        token = catalog["tokens"][(net, symbol)]
        lo, acc = acc, acc + weight
        rows.append(
            f"({lo / total}, {acc / total}, {plan.pk}, {token.pk}, {catalog['networks'][net].pk}, "
            f"{catalog['contracts'][net].pk}, {plan.provider_id}, {catalog['networks'][net].chain_id}, "
            f"{plan.price_amount}, interval '{INTERVAL_SQL[interval]}', {str(symbol == 'ETH').lower()})"
        )
    return ",\n".join(rows)


def _payments(cur, catalog: dict, *, payments: int, users: int, user_base: int, days: int) -> None:
    plans = _plan_table(catalog)
    cur.execute("DROP TABLE IF EXISTS bench_plan_map")
    cur.execute(
        "CREATE TEMP TABLE bench_plan_map (lo float8, hi float8, plan_id int, token_id int, network_id int, "
        "contract_id int, provider_id int, chain_id bigint, amount numeric, period interval, native bool)"
    )
    cur.execute(f"INSERT INTO bench_plan_map VALUES {plans}")  # noqa: S608 (numbers built above)
    # One draw per column; payments spread evenly over the days (a steady business). Status buckets: 84 % confirmed,
    # 3 % refunded, 5 % failed, 6 % expired, 1 % needs_review, 1 % unmatched.
    cur.execute(
        """
        INSERT INTO billing_paymenttransaction (
            public_id, user_id, product_type, product_id, plan_id, provider_id, contract_id, network_id, chain_id,
            token_id, amount, periods, status, order_id, external_id, payer_address, tx_hash, block_number,
            block_hash, log_index, gas_used, effective_gas_price, fee, usd_rate_at_checkout,
            usd_rate_at_confirmation, failure_reason, expires_at, submitted_at, confirmed_at, refunded_at,
            refund_tx_hash, refund_status, checkout_payload, created_at, updated_at)
        SELECT gen_random_uuid(),
               CASE WHEN s.st = 'unmatched' THEN NULL ELSE %(user_base)s + s.u END,
               'plan', s.plan_id, s.plan_id, s.provider_id, s.contract_id, s.network_id, s.chain_id,
               s.token_id, s.amount * s.periods, s.periods, s.st,
               CASE WHEN s.st = 'unmatched' THEN NULL ELSE '0x' || md5('o' || s.i) || md5('p' || s.i) END,
               '', '',
               CASE WHEN s.mined THEN '0x' || md5('t' || s.i) || md5('h' || s.i) END,
               CASE WHEN s.mined THEN 1000000 + s.i END,
               CASE WHEN s.mined THEN '0x' || md5('b' || s.i) || md5('c' || s.i) ELSE '' END,
               CASE WHEN s.mined THEN 0 END,
               CASE WHEN s.mined THEN 120000 END,
               CASE WHEN s.mined THEN 1000000000 END,
               CASE WHEN s.mined THEN 120000000000000 END,
               s.rate, CASE WHEN s.confirmed THEN s.rate END,
               CASE WHEN s.st = 'failed' THEN 'execution reverted: QuoteExpired()'
                    WHEN s.st = 'needs_review' THEN 'reorg deeper than the confirmation depth'
                    ELSE '' END,
               s.created + interval '30 minutes',
               CASE WHEN s.st NOT IN ('expired', 'unmatched') THEN s.created + s.lat1 * interval '60 seconds' END,
               CASE WHEN s.confirmed THEN s.created + s.lat1 * interval '60 seconds'
                                         + (20 + 100 * s.lat2 ^ 3) * interval '1 second' END,
               CASE WHEN s.st = 'refunded' THEN s.created + interval '1 hour' + s.lat2 * interval '5 days' END,
               CASE WHEN s.st = 'refunded' THEN '0x' || md5('r' || s.i) || md5('s' || s.i) ELSE '' END,
               CASE WHEN s.st = 'refunded' THEN 'mined' ELSE '' END,
               '{"source": "bench-overview"}'::jsonb,
               s.created, s.created
        FROM (
            SELECT s1.*, s1.st IN ('confirmed', 'refunded', 'needs_review') AS confirmed,
                   s1.st IN ('confirmed', 'refunded', 'needs_review', 'unmatched', 'failed') AS mined,
                   m.plan_id, m.token_id, m.network_id, m.contract_id, m.provider_id, m.chain_id, m.amount,
                   CASE WHEN m.native THEN s1.eth_rate ELSE 1.00000000 END AS rate
            FROM (
                SELECT s0.*,
                       CASE WHEN s0.r < 0.84 THEN 'confirmed' WHEN s0.r < 0.87 THEN 'refunded'
                            WHEN s0.r < 0.92 THEN 'failed' WHEN s0.r < 0.975 THEN 'expired'
                            WHEN s0.r < 0.985 THEN 'needs_review' WHEN s0.r < 0.995 THEN 'unmatched'
                            ELSE 'expired' END AS st
                FROM (
                    SELECT g AS i, floor(random() * %(users)s)::int AS u, random() AS pick, random() AS r,
                           now() - (%(days)s * interval '1 day') * random() - interval '2 hours' AS created,
                           random() AS lat1, random() AS lat2,
                           CASE WHEN random() < 0.06 THEN 3 ELSE 1 END AS periods,
                           round((2500 + 1000 * random())::numeric, 8) AS eth_rate
                    FROM generate_series(1, %(payments)s) g
                ) s0
            ) s1
            JOIN bench_plan_map m ON s1.pick >= m.lo AND s1.pick < m.hi
        ) s
        """,
        {"user_base": user_base, "users": users, "payments": payments, "days": days},
    )


def _history(cur) -> None:
    """Two status rows per payment (created, then where it ended), as the ledger services would write."""
    cur.execute(
        """
        INSERT INTO billing_transactionstatuschange (transaction_id, from_status, to_status, actor, reason, details,
                                                     created_at)
        SELECT id, '', CASE WHEN status = 'unmatched' THEN 'unmatched' ELSE 'pending' END,
               'bench', '', '{}'::jsonb, created_at
        FROM billing_paymenttransaction WHERE checkout_payload @> '{"source": "bench-overview"}'
        UNION ALL
        SELECT id, CASE WHEN status = 'needs_review' THEN 'confirmed' WHEN status = 'refunded' THEN 'confirmed'
                        ELSE 'pending' END,
               status, CASE WHEN status = 'needs_review' THEN 'chain:follower' ELSE 'bench' END,
               CASE WHEN status = 'needs_review'
                    THEN 'reorg deeper than the confirmation depth removed block ' || block_number ELSE '' END,
               CASE WHEN status = 'needs_review' THEN jsonb_build_object('fork_block', block_number - 3)
                    ELSE '{}'::jsonb END,
               COALESCE(refunded_at, confirmed_at + interval '10 minutes', expires_at, created_at)
        FROM billing_paymenttransaction
        WHERE checkout_payload @> '{"source": "bench-overview"}' AND status NOT IN ('pending', 'unmatched')
        """
    )


def _subscriptions(cur, catalog: dict) -> None:
    """One subscription per customer with a confirmed payment, from their first and latest ones."""
    cur.execute(
        """
        INSERT INTO billing_subscription (user_id, plan_id, status, current_period_start, current_period_end,
                                          cancel_at_period_end, canceled_at, grace_until, debt_amount, debt_token_id,
                                          last_transaction_id, ended_at, created_at, updated_at, pending_plan_id,
                                          pending_period_end)
        SELECT l.user_id, l.plan_id,
               CASE WHEN l.cpe > now() THEN 'active'
                    WHEN l.cpe + interval '3 days' > now() THEN 'past_due'
                    WHEN l.cancel THEN 'canceled' ELSE 'expired' END,
               -- renewals keep the period start; one in ten changed plan (an upgrade starts a new period)
               CASE WHEN mod(l.id, 10) = 0 THEN l.confirmed_at ELSE f.first_at END,
               l.cpe, l.cancel, CASE WHEN l.cancel THEN l.confirmed_at + interval '1 day' END,
               CASE WHEN l.cpe <= now() AND NOT l.cancel THEN l.cpe + interval '3 days' END,
               CASE WHEN l.cpe <= now() AND NOT l.cancel THEN l.price ELSE 0 END,
               CASE WHEN l.cpe <= now() AND NOT l.cancel THEN l.price_token_id END,
               l.id,
               CASE WHEN l.cpe + interval '3 days' <= now() AND NOT l.cancel THEN l.cpe + interval '3 days'
                    WHEN l.cpe <= now() AND l.cancel THEN l.cpe END,
               f.first_at, now(), NULL, NULL
        FROM (
            SELECT DISTINCT ON (t.user_id) t.user_id, t.plan_id, t.id, t.confirmed_at,
                   t.confirmed_at + t.periods * CASE p.interval WHEN 'day' THEN interval '1 day'
                        WHEN 'week' THEN interval '7 days' WHEN 'month' THEN interval '30 days'
                        ELSE interval '365 days' END AS cpe,
                   p.price_amount AS price, p.price_token_id, (mod(t.id, 3) = 0) AS cancel
            FROM billing_paymenttransaction t JOIN billing_plan p ON p.id = t.plan_id
            WHERE t.status = 'confirmed' AND t.user_id IS NOT NULL
            ORDER BY t.user_id, t.confirmed_at DESC
        ) l
        JOIN (SELECT user_id, min(confirmed_at) AS first_at FROM billing_paymenttransaction
              WHERE status IN ('confirmed', 'refunded') AND user_id IS NOT NULL GROUP BY user_id) f
          ON f.user_id = l.user_id
        """
    )


def _operator_txs(cur, catalog: dict) -> None:
    """A mined refund transaction (with its network fee) for every refunded payment."""
    cur.execute(
        """
        INSERT INTO billing_operatortransaction (kind, status, network_id, chain_id, payment_id, sender, "to", data,
                                                 value, tx_hashes, mined_tx_hash, block_number, gas_used,
                                                 effective_gas_price, fee, replacements, requested_by, reason, error,
                                                 last_sent_at, mined_at, created_at, updated_at)
        SELECT 'refund', 'mined', t.network_id, t.chain_id, t.id, '', '', '0x', 0,
               jsonb_build_array(t.refund_tx_hash), t.refund_tx_hash, t.block_number + 100,
               60000, 1500000000, 90000000000000, 0, 'bench', 'bench refund', '',
               t.refunded_at, t.refunded_at, t.refunded_at, t.refunded_at
        FROM billing_paymenttransaction t WHERE t.status = 'refunded' AND t.user_id IS NOT NULL
        """
    )


def _withdrawals(cur, catalog: dict, *, days: int) -> None:
    """A weekly withdrawal of each token from each contract: a Withdrawn log and its operator transaction."""
    from billing.fields import ZERO_ADDRESS

    for slug, contract in catalog["contracts"].items():
        for symbol in ("USDC", "ETH"):
            token = catalog["tokens"][(slug, symbol)]
            amount = 1000 * 10**6 if symbol == "USDC" else 10**18 // 2
            cur.execute(
                """
                INSERT INTO billing_chainevent (contract_id, chain_id, name, block_number, block_hash, tx_hash,
                                                log_index, args, amount, token_address, removed, apply_error,
                                                created_at)
                SELECT %(contract)s, %(chain)s, 'Withdrawn', 2000000 + w * 50400, '0x' || md5('wb' || w || %(key)s)
                       || md5('x'), '0x' || md5('wt' || w || %(key)s) || md5('y'), 0,
                       jsonb_build_object('token', %(token_arg)s, 'to', %(treasury)s, 'amount', %(amount)s::text),
                       %(amount)s, %(token_address)s, false, '', now() - (w * interval '7 days')
                FROM generate_series(0, %(weeks)s) w
                """,
                {
                    "contract": contract.pk,
                    "chain": contract.network.chain_id,
                    "key": f"{slug}{symbol}",
                    "token_arg": token.address or ZERO_ADDRESS,
                    "token_address": token.address,
                    "treasury": "0x000000000000000000000000000000000000dEaD",
                    "amount": amount,
                    "weeks": days // 7,
                },
            )
            cur.execute(
                """
                INSERT INTO billing_operatortransaction (kind, status, network_id, chain_id, sender, "to", data,
                                                         value, tx_hashes, mined_tx_hash, block_number, gas_used,
                                                         effective_gas_price, fee, replacements, requested_by,
                                                         reason, error, last_sent_at, mined_at, created_at,
                                                         updated_at)
                SELECT 'withdraw', 'mined', %(network)s, %(chain)s, '', %(to)s, '0x', 0, '[]'::jsonb, '', NULL,
                       70000, 1500000000, 105000000000000, 0, 'bench', 'weekly sweep', '',
                       now() - (w * interval '7 days'), now() - (w * interval '7 days'),
                       now() - (w * interval '7 days'), now() - (w * interval '7 days')
                FROM generate_series(0, %(weeks)s) w
                """,
                {
                    "network": contract.network_id,
                    "chain": contract.network.chain_id,
                    "to": contract.address,
                    "weeks": days // 7,
                },
            )


def _cursors_and_health(cur, catalog: dict) -> None:
    from billing.models import ChainCursor, RpcEndpoint

    for contract in catalog["contracts"].values():
        ChainCursor.objects.create(contract=contract, last_block=2_000_000 + 52 * 50_400)
    RpcEndpoint.objects.filter(network__slug__startswith="bench-").update(
        last_head_block=2_000_000 + 52 * 50_400 + 14, healthy=True, last_latency_ms=40
    )


def _dead_letters(cur) -> None:
    cur.execute(
        """
        WITH e AS (
            INSERT INTO billing_outboxevent (event_id, topic, aggregate_type, aggregate_id, payload, created_at)
            SELECT gen_random_uuid(), 'plan.changed.v1', 'user', g::text, '{}'::jsonb, now() - g * interval '1 hour'
            FROM generate_series(1, 20) g RETURNING id, created_at
        )
        INSERT INTO billing_outboxdelivery (event_id, subscriber, status, attempts, max_attempts, last_error,
                                            created_at, updated_at)
        SELECT id, 'crm', 'dead', 8, 8, 'HTTP 503', created_at, created_at FROM e
        """
    )
