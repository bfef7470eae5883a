import pytest

pytestmark = pytest.mark.chain


def test_anvil_mines_on_request(anvil):
    before = anvil.block_number()
    anvil.mine(3)
    assert anvil.block_number() == before + 3
    assert int(anvil.call("eth_chainId"), 16) == 31337
