"""The SSH layer against a real fleet of sshd hosts: commands, files, isolation of the hosts'
workingDir, and the one-line errors an operator gets for each way a login can go wrong."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ossimport_dist.errors import ConfigError, WorkerUnreachable
from ossimport_dist.fleet.hosts import Host, find_workers_file, read_workers
from ossimport_dist.fleet.ssh import Connection, RemoteCommandFailed, run_on_hosts

pytest_plugins = ["fleet"]
# One worker of a parallel run holds the fleet (sshd on 127.0.0.11-13): its tests run there.
pytestmark = pytest.mark.xdist_group("fleet")


def one_line_error(excinfo, host: Host, password: str) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    assert text.startswith(f"{host}: "), text
    assert password not in text
    return text


def keygen(path: Path, passphrase: str = "") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)],
                   check=True, timeout=30)
    return str(path)


# --- the workers file -------------------------------------------------------------------------

def test_workers_file_forms(tmp_path):
    path = tmp_path / "workers.txt"
    path.write_text("# master first\n 127.0.0.11 \n\n127.0.0.12:2222  # other port\n"
                    "[::1]:2200\n[fe80::1]\nworker-3.example.com\n")
    hosts = read_workers(path, default_port=2022)
    assert hosts == [Host("127.0.0.11", "127.0.0.11", 2022),
                     Host("127.0.0.12_2222", "127.0.0.12", 2222),
                     Host("__1_2200", "::1", 2200),
                     Host("fe80__1", "fe80::1", 2022),
                     Host("worker-3.example.com", "worker-3.example.com", 2022)]
    assert str(hosts[2]) == "[::1]:2200"


@pytest.mark.parametrize("lines, line, words", [
    ("a.example\nb.example\na.example\n", 3, "same host as line 1"),
    ("10.0.0.1\n10.0.0.1:22\n", 2, "same host as line 1"),
    ("10.0.0.1:99999\n", 1, "bad port '99999'"),
    ("10.0.0.1:ssh\n", 1, "bad port 'ssh'"),
    ("\n\nroot@10.0.0.1\n", 3, "workerUserName"),
    ("::1\n", 1, "needs brackets"),
])
def test_workers_file_errors_name_the_line(tmp_path, lines, line, words):
    path = tmp_path / "workers"
    path.write_text(lines)
    with pytest.raises(ConfigError) as e:
        read_workers(path)
    assert e.value.line == line and e.value.key == "host"
    assert words in str(e.value) and f"{path}:{line}" in str(e.value)


def test_workers_file_empty_or_missing(tmp_path):
    (tmp_path / "w").write_text("# nobody\n\n")
    with pytest.raises(ConfigError, match="no hosts"):
        read_workers(tmp_path / "w")
    with pytest.raises(ConfigError, match="cannot read"):
        read_workers(tmp_path / "missing")


def test_find_workers_file(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    assert find_workers_file(conf, tmp_path) is None
    (conf / "workers").write_text("h1\n")
    assert find_workers_file(conf, tmp_path) == conf / "workers"
    (tmp_path / "workers.txt").write_text("h2\n")
    assert find_workers_file(conf, tmp_path) == tmp_path / "workers.txt"


def test_fleet_workers_file_reads_back(fleet, tmp_path):
    assert read_workers(fleet.write_workers_file(tmp_path / "workers.txt")) == fleet.hosts


# --- commands and files -----------------------------------------------------------------------

@pytest.mark.parametrize("login", ["password", "key"])
def test_commands_and_files_on_every_host(fleet, tmp_path, login):
    settings = fleet.settings() if login == "password" else \
        fleet.settings(key_file=fleet.key_file, password="not-the-password")  # the key wins
    wd = fleet.working_dir
    big = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "big.bin").write_bytes(big)
    for host in fleet.hosts:
        with Connection(host, settings) as conn:
            res = conn.run("cat; echo err >&2; id -un", input=b"from stdin\n")
            assert (res.rc, res.stdout, res.stderr) == (0, f"from stdin\n{fleet.user}\n", "err\n")
            assert conn.run("exit 3", check=False).rc == 3
            with pytest.raises(RemoteCommandFailed, match=r"exit 4\): .*: boom"):
                conn.run("echo boom >&2; exit 4")

            job = f"{wd}/{login}/master/jobs/j1"
            conn.makedirs(f"{job}/dispatched")
            conn.makedirs(f"{job}/dispatched")  # again: no error
            conn.put_bytes(b"secret", f"{job}/job.cfg", mode=0o600)
            conn.put_file(tmp_path / "big.bin", f"{job}/big.bin")
            assert conn.get_bytes(f"{job}/job.cfg") == b"secret"
            conn.get_file(f"{job}/big.bin", tmp_path / "back.bin")
            assert (tmp_path / "back.bin").read_bytes() == big
            assert conn.listdir(job) == ["big.bin", "dispatched", "job.cfg"]  # no temp files left
            assert conn.listdir(f"{wd}/no/such/dir") == []

            real = fleet.host_dir(host) / login / "master/jobs/j1"
            assert (real / "job.cfg").stat().st_mode & 0o777 == 0o600
            assert abs(conn.stat_mtime(f"{job}/job.cfg") - (real / "job.cfg").stat().st_mtime) < 1
            assert conn.stat_mtime(f"{job}/nothing") is None

            conn.makedirs(f"{job}/pending/t1")
            conn.rename(f"{job}/pending/t1", f"{job}/dispatched/t1")
            assert conn.exists(f"{job}/dispatched/t1") and not conn.exists(f"{job}/pending/t1")
            conn.put_bytes(b"new", f"{job}/job.cfg")  # replaces atomically
            assert (real / "job.cfg").read_bytes() == b"new"

            conn.remove_tree(f"{wd}/{login}")
            conn.remove_tree(f"{wd}/{login}")  # missing: fine
            assert not (fleet.host_dir(host) / login).exists()
            with pytest.raises(ValueError):
                conn.remove_tree("/")


def test_hosts_see_their_own_working_dir_only(fleet):
    wd = fleet.working_dir
    master_file = Path(wd) / "master-only.txt"
    master_file.write_text("master")
    try:
        first, second = fleet.hosts[0], fleet.hosts[1]
        with Connection(first, fleet.settings()) as a, Connection(second, fleet.settings()) as b:
            assert not a.exists(str(master_file))
            a.put_bytes(b"host a", f"{wd}/from-a.txt")
            assert (fleet.host_dir(first) / "from-a.txt").read_bytes() == b"host a"
            assert not (Path(wd) / "from-a.txt").exists()  # not in the master's workingDir
            assert not b.exists(f"{wd}/from-a.txt")  # nor on another host
            a.remove_tree(f"{wd}/from-a.txt")
    finally:
        master_file.unlink()


def test_one_connection_shared_by_threads(fleet):
    wd = fleet.working_dir
    errors = []
    with Connection(fleet.hosts[0], fleet.settings()) as conn:
        def work(i):
            try:
                assert conn.run(f"echo {i}").stdout == f"{i}\n"
                conn.put_bytes(str(i).encode(), f"{wd}/t{i}")
                assert conn.get_bytes(f"{wd}/t{i}") == str(i).encode()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        conn.run(f"rm -f {wd}/t*")
    assert errors == []


def test_command_timeout_and_background_processes(fleet):
    with Connection(fleet.hosts[0], fleet.settings()) as conn:
        started = time.monotonic()
        with pytest.raises(WorkerUnreachable, match=r"did not finish within 1 s: sleep 20"):
            conn.run("sleep 20", timeout=1)
        assert time.monotonic() - started < 5
        # A daemon left behind (stdout still on the channel) must not hold run() until the timeout.
        started = time.monotonic()
        pid = conn.run("sleep 30 & echo $!", timeout=20).stdout.strip()
        assert time.monotonic() - started < 5
        conn.run(f"kill {pid}")
        assert conn.run("echo still usable").stdout == "still usable\n"


def test_reconnects_after_the_host_comes_back(fleet):
    host = fleet.hosts[2]
    conn = Connection(host, fleet.settings())
    try:
        assert conn.run("echo up").stdout == "up\n"
        fleet.stop_sshd(host)
        with pytest.raises(WorkerUnreachable) as e:
            conn.run("echo down")
        one_line_error(e, host, fleet.password)
        fleet.start_sshd(host)
        assert conn.run("echo up again").stdout == "up again\n"
        assert conn.listdir("/") != []
    finally:
        fleet.start_sshd(host)
        conn.close()


# --- what an operator sees when a login fails -------------------------------------------------

def test_wrong_password(fleet, caplog):
    caplog.set_level(logging.DEBUG)
    host = fleet.hosts[0]
    wrong = "Wrong-" + fleet.password[::-1]
    with pytest.raises(WorkerUnreachable) as e:
        Connection(host, fleet.settings(password=wrong)).run("true")
    text = one_line_error(e, host, wrong)
    assert text == (f"{host}: authentication failed for user '{fleet.user}' (password); "
                    "check workerUserName/workerPassword in conf/sys.properties")
    assert wrong not in caplog.text and fleet.password not in caplog.text


def test_wrong_key_missing_key_encrypted_key(fleet, tmp_path):
    host = fleet.hosts[1]
    other = keygen(tmp_path / "other")
    with pytest.raises(WorkerUnreachable) as e:
        Connection(host, fleet.settings(key_file=other)).run("true")
    assert one_line_error(e, host, fleet.password).startswith(
        f"{host}: authentication failed for user '{fleet.user}' with key {other}; check privateKeyFile")

    with pytest.raises(WorkerUnreachable) as e:
        Connection(host, fleet.settings(key_file=str(tmp_path / "nope"))).run("true")
    assert f"private key file {tmp_path / 'nope'} not found" in one_line_error(e, host, fleet.password)

    locked = keygen(tmp_path / "locked", passphrase="key-pass-123")
    with pytest.raises(WorkerUnreachable) as e:
        Connection(host, fleet.settings(key_file=locked)).run("true")
    assert f"private key file {locked} is encrypted" in one_line_error(e, host, fleet.password)

    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(WorkerUnreachable) as e:
        Connection(host, fleet.settings(key_file=str(tmp_path / "junk"))).run("true")
    assert "is not a private key" in one_line_error(e, host, fleet.password)


def test_unreachable_hosts(fleet):
    dead = fleet.dead_host
    with pytest.raises(WorkerUnreachable) as e:
        Connection(dead, fleet.settings()).run("true")
    assert one_line_error(e, dead, fleet.password) == (
        f"{dead}: cannot connect (connection refused); is sshd running and the host in workers.txt right?")

    # Something accepts the connection but never speaks SSH: bounded by the connect timeout.
    with socket.socket() as silent:
        silent.bind((dead.address, 0))
        silent.listen(5)
        mute = Host(dead.address, dead.address, silent.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(WorkerUnreachable) as e:
            Connection(mute, fleet.settings(connect_timeout=1)).run("true")
        assert time.monotonic() - started < 5
        assert "cannot connect (" in one_line_error(e, mute, fleet.password)


def test_unknown_host_key_is_refused_unless_accepted(fleet, tmp_path):
    host = fleet.hosts[0]
    known = tmp_path / "ssh" / "known_hosts"
    for present in (False, True):
        if present:
            known.parent.mkdir()
            known.write_text("")
        with pytest.raises(WorkerUnreachable) as e:
            Connection(host, fleet.settings(known_hosts=str(known))).run("true")
        text = one_line_error(e, host, fleet.password)
        assert "host key (ssh-ed25519 SHA256:" in text
        assert f"not in known_hosts ({known}); run 'ssh-keyscan -p {host.port} {host.address} >> {known}'" in text
        assert text.endswith("or set sshAcceptNewHostKeys=true in sys.properties")

    accept = fleet.settings(known_hosts=str(known), accept_new_host_keys=True)
    results = run_on_hosts(fleet.hosts, lambda c: c.run("echo ok").stdout, accept)
    assert [r.value for r in results.values()] == ["ok\n"] * len(fleet.hosts)
    assert len(known.read_text().splitlines()) == len(fleet.hosts)
    # Now known: the safe policy lets them in.
    assert Connection(host, fleet.settings(known_hosts=str(known))).run("echo again").stdout == "again\n"


def test_changed_host_key_is_refused(fleet, tmp_path):
    host, other = fleet.hosts[0], fleet.hosts[1]
    lines = Path(fleet.known_hosts).read_text().splitlines()
    other_key = next(ln for ln in lines if ln.split()[0] in (other.address, f"[{other.address}]:{other.port}"))
    name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    known = tmp_path / "known_hosts"
    known.write_text(f"{name} {' '.join(other_key.split()[1:])}\n")
    with pytest.raises(WorkerUnreachable) as e:
        Connection(host, fleet.settings(known_hosts=str(known), accept_new_host_keys=True)).run("true")
    text = one_line_error(e, host, fleet.password)
    assert "host key changed" in text and "refusing to connect" in text and "ssh-keygen -R" in text


def test_no_credentials_named(fleet):
    host = fleet.hosts[0]
    with pytest.raises(WorkerUnreachable, match="set workerPassword or privateKeyFile"):
        Connection(host, fleet.settings(password="")).run("true")
    with pytest.raises(WorkerUnreachable, match="set workerUserName"):
        Connection(host, fleet.settings(user="")).run("true")


def test_run_on_hosts_reports_a_dead_host_as_a_row(fleet):
    hosts = [fleet.hosts[0], fleet.dead_host, fleet.hosts[1], fleet.hosts[2]]

    def probe(conn):
        if conn.host == fleet.hosts[2]:
            raise KeyError("a bug in the caller")
        return conn.run("id -un").stdout.strip()

    results = run_on_hosts(hosts, probe, fleet.settings())
    assert list(results) == hosts
    assert results[fleet.hosts[0]].ok and results[fleet.hosts[0]].value == fleet.user
    assert results[fleet.hosts[1]].value == fleet.user
    dead = results[fleet.dead_host]
    assert not dead.ok and dead.error.startswith(f"{fleet.dead_host}: cannot connect (connection refused)")
    assert results[fleet.hosts[2]].error == f"{fleet.hosts[2]}: KeyError: 'a bug in the caller'"


def test_password_never_in_any_error(fleet):
    secret = fleet.password
    wrong_user = fleet.settings(user="nobody-here")
    errors = run_on_hosts(fleet.hosts + [fleet.dead_host], lambda c: c.run("true"), wrong_user)
    leaky = run_on_hosts(fleet.hosts[:1], lambda c: c.run(f"echo {secret} >&2; exit 1"), fleet.settings())
    texts = [r.error for r in list(errors.values()) + list(leaky.values())]
    assert all(texts) and all(secret not in t for t in texts), texts
    assert "******" in texts[-1]
    with pytest.raises(RemoteCommandFailed) as e:
        Connection(fleet.hosts[0], fleet.settings()).run(f"echo {secret} >&2; exit 1")
    assert secret not in str(e.value)
    assert secret not in repr(fleet.settings())
