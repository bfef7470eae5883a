"""EVM provider adapter: builds what a wallet signs (native value or ERC-20 approve + call, an EIP-681
link, an EIP-712 quote signed by the backend's quote signer) and verifies indexer webhooks."""

from __future__ import annotations

from datetime import datetime

from eth_utils import is_address

from billing import signing
from billing.adapters.base import (
    CheckoutPayload,
    CheckoutRequest,
    PaymentProviderAdapter,
    WalletStep,
    WebhookVerification,
)
from billing.chain.abi import ERC20_ABI, decode_call, encode_call, jsonable
from billing.chain.abi import checksum as to_checksum_address
from billing.chain.quote import Quote, get_quote_signer, sign_quote, typed_data


class InvalidCheckoutRequest(ValueError):
    """The request cannot become a payment (bad address, amount, method...); nothing was signed."""


class EvmProvider(PaymentProviderAdapter):
    slug = "evm"

    def checkout(self, request: CheckoutRequest) -> CheckoutPayload:
        """Sign the quote and build the wallet steps, in the order the wallet sends them.

        - Native coin: one step, `<mint_method>(quote, signature)` on the contract with value = amount.
        - ERC-20: step 1 `approve(contract, amount)` on the token, step 2 `<mint_method>(quote, signature)` on
          the contract with value 0 (the contract pulls the tokens with transferFrom).

        Each step carries to / data / value (int, wei) / chain_id, and `args`: the calldata decoded back from
        the ABI, JSON-safe (integers as strings), so a page can show exactly what the wallet will be asked.

        EIP-681 links (`payload.eip681` and each step's `eip681`):
        - native: `ethereum:<contract>@<chainId>?value=<amount>`. EIP-681 cannot express a call whose argument
          is a struct plus a signature, so this link alone sends the value without the calldata: the contract
          has no receive function and such a bare transfer reverts. A wallet must send the pay step with its
          `data`; the link is for wallets that show the target and amount before the dapp fills the calldata.
        - ERC-20: the link is the approve step,
          `ethereum:<token>@<chainId>/approve?address=<contract>&uint256=<amount>`; never a `transfer` to the
          contract (a plain transfer is not a payment: it would land as "unmatched"). The pay step that follows
          again needs its calldata, as above.

        The adapter never touches the ORM: everything comes in the request.
        """
        quote = self._quote(request)
        contract = to_checksum_address(request.contract_address)
        chain_id = int(request.chain_id)
        domain_kwargs = {
            "chain_id": chain_id,
            "verifying_contract": contract,
            "name": request.eip712_name,
            "version": request.eip712_version,
        }
        signer = get_quote_signer()
        signature = sign_quote(quote, signer=signer, **domain_kwargs)

        abi = request.contract_abi or []
        try:
            pay_data = encode_call(abi, request.mint_method, [quote.as_abi_tuple(), bytes.fromhex(signature[2:])])
        except ValueError as exc:
            raise InvalidCheckoutRequest(str(exc))
        pay_value = quote.amount if quote.is_native else 0
        steps: list[WalletStep] = []

        if quote.is_native:
            link = f"ethereum:{contract}@{chain_id}?value={quote.amount}"
        else:
            token = quote.token_address
            approve_data = encode_call(ERC20_ABI, "approve", [contract, quote.amount])
            link = f"ethereum:{token}@{chain_id}/approve?address={contract}&uint256={quote.amount}"
            steps.append(
                WalletStep(
                    kind="approve",
                    description=f"Allow the payment contract to take {quote.amount} units of {request.token_symbol}",
                    to=token,
                    data=approve_data,
                    value=0,
                    chain_id=chain_id,
                    function="approve",
                    args=jsonable(decode_call(ERC20_ABI, approve_data, function="approve")[1]),
                    eip681=link,
                )
            )
        steps.append(
            WalletStep(
                kind="pay",
                description=f"Pay {quote.amount} units of {request.token_symbol} for {quote.periods} period(s)",
                to=contract,
                data=pay_data,
                value=pay_value,
                chain_id=chain_id,
                function=request.mint_method,
                args=jsonable(decode_call(abi, pay_data, function=request.mint_method)[1]),
                eip681=f"ethereum:{contract}@{chain_id}?value={pay_value}",
            )
        )
        return CheckoutPayload(
            chain_id=chain_id,
            contract_address=contract,
            steps=tuple(steps),
            eip681=link,
            quote=quote.as_json(),
            signature=signature,
            signer=signer.address,
            expires_at=request.deadline,
            typed_data=typed_data(quote, **domain_kwargs),
        )

    @staticmethod
    def _quote(request: CheckoutRequest) -> Quote:
        for label, address in (("contract_address", request.contract_address), ("payer", request.payer)):
            if not is_address(address or ""):
                raise InvalidCheckoutRequest(f"{label} is not an EVM address.")
        if request.token_address is not None and not is_address(request.token_address):
            raise InvalidCheckoutRequest("token_address is not an EVM address.")
        if request.amount <= 0:
            raise InvalidCheckoutRequest("amount must be positive.")
        if request.periods <= 0:
            raise InvalidCheckoutRequest("periods must be positive.")
        if request.deadline.tzinfo is None:
            raise InvalidCheckoutRequest("deadline must be timezone-aware.")
        try:
            return Quote(
                order_id=request.order_id,
                payer=to_checksum_address(request.payer),
                plan_id=int(request.plan_id),
                token=request.token_address or None,
                amount=int(request.amount),
                periods=int(request.periods),
                deadline=int(request.deadline.timestamp()),
            )
        except ValueError as exc:
            raise InvalidCheckoutRequest(str(exc))

    def verify_webhook(
        self,
        *,
        raw_body: bytes,
        signature_header: str,
        secret: str,
        previous_secret: str = "",
        previous_valid_until: datetime | None = None,
        now: datetime | None = None,
    ) -> WebhookVerification:
        secrets = [secret]
        moment = now.timestamp() if now else None
        if previous_secret and (
            previous_valid_until is None or (now or datetime.now(previous_valid_until.tzinfo)) <= previous_valid_until
        ):
            secrets.append(previous_secret)
        ok, reason, index = signing.check(raw_body, signature_header, secrets, now=moment)
        timestamp, _ = signing.parse(signature_header)
        return WebhookVerification(ok=ok, reason=reason, used_previous_secret=index == 1, timestamp=timestamp)
