"""Which blocks payments may be applied at: one rule per network (`Network.confirmation_policy`), used by the
webhook worker, receipt tracking and the chain follower alike (docs/lifecycle.md, "Confirmation policy").

- `depth`: the head minus `confirmation_depth` blocks;
- `safe` / `finalized`: the node's `safe` / `finalized` block (post-merge Ethereum, most L2s and anvil
  answer these tags), and never above the head minus `confirmation_depth` (set the depth to 0 to follow the
  tag alone). A node that does not know the tag falls back to the depth, with a warning."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


def applicable_block(network, client, *, head: int | None = None) -> int:
    """The highest block at which payments may be applied on `network` now (-1: none yet). `head`: the head
    the caller just read, if any. Raises the chain client's RpcError when the chain cannot answer (the
    caller retries later; nothing is applied)."""
    from billing.chain.rpc import JsonRpcError, MethodNotSupported
    from billing.models import ConfirmationPolicy

    by_depth = (client.block_number() if head is None else head) - network.confirmation_depth
    policy = network.confirmation_policy
    if policy == ConfirmationPolicy.DEPTH:
        return by_depth
    try:
        block = client.get_block(policy)
    except (JsonRpcError, MethodNotSupported) as exc:
        log.warning("chain.confirmation_tag_unsupported", network=network.slug, tag=policy, error=str(exc)[:200])
        return by_depth
    if block is None:
        return -1  # the node knows the tag but has no such block yet: nothing is final
    return min(int(block["number"], 16), by_depth)
