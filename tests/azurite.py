"""Azurite's blob service, from npm, once per test session.

Installed on first use into ``.cache/npm-azurite`` (gitignored): a prefix of its own, because an
npm install into a prefix another fixture is installing into at the same time can break both.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import npm_install_lock

ROOT = Path(__file__).resolve().parents[1]
NPM_PREFIX = ROOT / ".cache" / "npm-azurite"
AZURITE_BLOB = NPM_PREFIX / "node_modules" / ".bin" / "azurite-blob"
INSTALL_TIMEOUT = 300
START_TIMEOUT = 30

# Azurite's fixed development account, published in its documentation: not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


@dataclass
class Azurite:
    process: subprocess.Popen
    port: int
    account: str = ACCOUNT
    key: str = ACCOUNT_KEY

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    def service_client(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.endpoint, credential={"account_name": self.account,
                                                            "account_key": self.key})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _install() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: Azurite (the Azure Blob emulator) comes from npm")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund",
                             "--prefix", str(NPM_PREFIX), "azurite@3"],
                            capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0 or not AZURITE_BLOB.exists():
        raise RuntimeError(f"npm install azurite@3 failed (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_azurite(location: Path) -> Azurite:
    with npm_install_lock(NPM_PREFIX):
        if not AZURITE_BLOB.exists():
            _install()
    port = _free_port()
    log = open(location / "azurite.log", "wb")
    process = subprocess.Popen(
        [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", str(location), "--silent", "--skipApiVersionCheck", "--loose"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    handle = Azurite(process, port)
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            text = (location / "azurite.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Azurite did not start on port {port} within "
                               f"{START_TIMEOUT}s: {text}")
        time.sleep(0.1)
    return handle


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    handle = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield handle
    handle.stop()
