"""Real third-party S3 servers on loopback for the S3 driver's stories.

- moto's standalone server (``python -m moto.server``), from the ``moto[server]`` test extra.
- s3rver (npm), installed on first use into ``<repo>/.cache/npm`` (gitignored); its tests are
  skipped with the reason when npm is not installed. s3rver checks Signature V4 against its
  fixed credentials, so it is the server that proves a wrong secret is reported well; moto
  accepts any signature unless IAM emulation is switched on.

Each server runs in its own process on a free port for the whole session, and every wait is
bounded. Import the fixtures into a test module with ``from s3servers import ...``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import npm_install_lock

ROOT = Path(__file__).resolve().parents[1]
NPM_PREFIX = ROOT / ".cache" / "npm"
S3RVER_BIN = NPM_PREFIX / "node_modules" / ".bin" / "s3rver"
START_TIMEOUT = 30.0
NPM_TIMEOUT = 240.0


@dataclass
class S3Server:
    name: str
    endpoint: str
    access_key: str
    secret_key: str
    checks_signatures: bool  # refuses unknown credentials
    proc: subprocess.Popen

    def client(self, secret_key: str = ""):
        import boto3
        import botocore.config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=botocore.config.Config(s3={"addressing_style": "path"},
                                          signature_version="s3v4", max_pool_connections=32,
                                          connect_timeout=5, read_timeout=30))

    def new_bucket(self) -> str:
        name = "b-" + uuid.uuid4().hex[:20]
        self.client().create_bucket(Bucket=name)
        return name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(cmd: list, log: Path, env=None) -> subprocess.Popen:
    # Output goes to a file: a pipe nobody drains fills up and stalls a server that logs every
    # request (moto does).
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)


def _wait_http(url: str, proc: subprocess.Popen, what: str, log: Path,
               timeout: float = START_TIMEOUT):
    """Until ``url`` answers any HTTP status; fails with the server's output otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering: {out}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    pytest.importorskip("moto.server", reason="moto[server] is not installed (test extra)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="moto-key", AWS_SECRET_ACCESS_KEY="moto-secret")
    proc = _start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log, env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_http(endpoint + "/moto-api/", proc, "moto server", log)
        yield S3Server("moto", endpoint, "moto-key", "moto-secret", False, proc)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def moto_auth_server(tmp_path_factory):
    """A second moto that checks signatures (its IAM emulation on): one user, full S3 rights."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (test extra)")
    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    # The first three requests (create user, key, policy) go unchecked; every later one is.
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    proc = _start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log, env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_http(endpoint + "/moto-api/", proc, "moto server (auth)", log)
        iam = boto3.session.Session().client("iam", endpoint_url=endpoint, region_name="us-east-1",
                                             aws_access_key_id="bootstrap",
                                             aws_secret_access_key="bootstrap")
        iam.create_user(UserName="migrator")
        key = iam.create_access_key(UserName="migrator")["AccessKey"]
        iam.put_user_policy(UserName="migrator", PolicyName="s3-all", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*",'
            '"Resource":"*"}]}'))
        yield S3Server("moto-auth", endpoint, key["AccessKeyId"], key["SecretAccessKey"], True, proc)
    finally:
        _stop(proc)


def _ensure_s3rver() -> Path:
    with npm_install_lock(NPM_PREFIX):
        return _install_s3rver()


def _install_s3rver() -> Path:
    if S3RVER_BIN.exists():
        return S3RVER_BIN
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        pytest.skip("s3rver needs node and npm, which are not installed")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run([npm, "install", "--no-save", "--prefix", str(NPM_PREFIX), "s3rver@3"],
                                capture_output=True, text=True, timeout=NPM_TIMEOUT,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"npm install s3rver@3 took more than {NPM_TIMEOUT:.0f}s")
    if result.returncode != 0 or not S3RVER_BIN.exists():
        pytest.fail(f"npm install s3rver@3 failed: {(result.stdout + result.stderr)[-2000:]}")
    return S3RVER_BIN


@pytest.fixture(scope="session")
def s3rver_server(tmp_path_factory):
    binary = _ensure_s3rver()
    data = tmp_path_factory.mktemp("s3rver-data")
    port = free_port()
    log = data.parent / (data.name + ".log")
    # s3rver 3 makes continuation tokens with a cipher OpenSSL 3 (node >= 17) only offers
    # through its legacy provider; without it every truncated listing is a 500.
    env = dict(os.environ)
    env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") + " --openssl-legacy-provider").strip()
    proc = _start([str(binary), "--directory", str(data), "--address", "127.0.0.1",
                   "--port", str(port), "--silent"], log, env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_http(endpoint + "/", proc, "s3rver", log)
        # s3rver's fixed credentials; it verifies signatures made with them.
        yield S3Server("s3rver", endpoint, "S3RVER", "S3RVER", True, proc)
    finally:
        _stop(proc)


@pytest.fixture(scope="session", params=["moto", "s3rver"])
def s3server(request):
    """Each S3 server in turn."""
    return request.getfixturevalue(f"{request.param}_server")
