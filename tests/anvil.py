"""Start and stop a real anvil (from the npm package) for tests and `make run`."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANVIL_BIN = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
# anvil's default mnemonic accounts (public test keys, funded with 10000 ETH on every anvil).
ANVIL_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rpc(url: str, method: str, params: list | None = None, timeout: float = 5):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        answer = json.loads(resp.read())
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer["result"]


class Anvil:
    def __init__(
        self,
        *,
        port: int | None = None,
        chain_id: int = 31337,
        block_time: int | None = None,
        state_path: Path | None = None,
    ):
        self.port = port or free_port()
        self.chain_id = chain_id
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            str(ANVIL_BIN),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--chain-id",
            str(chain_id),
            "--silent",
        ]
        if block_time:
            args += ["--block-time", str(block_time)]
        if state_path:
            args += ["--state", str(state_path)]
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> Anvil:
        if not ANVIL_BIN.exists():
            raise RuntimeError(f"anvil not found at {ANVIL_BIN}: run `npm ci` (make deps does it)")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"anvil exited with {self.proc.returncode}")
            try:
                rpc(self.url, "eth_chainId", timeout=1)
                return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("anvil did not answer in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def call(self, method: str, params: list | None = None):
        return rpc(self.url, method, params)

    def mine(self, blocks: int = 1) -> None:
        self.call("anvil_mine", [hex(blocks)])

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
