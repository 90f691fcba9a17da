"""The one HTTP client of the lean OSS/S3 path, the URL list and UPYUN, against a real loopback
``http.server``: kept-alive connections per thread and origin, a connection the server closed
while idle sent again once, a refused port that never connected, a silent server timing out
within the bound, and streamed bodies that give their connection back only when read whole."""

import http.server
import socket
import threading
import time

import pytest

from ossimport_dist.models import ObjectEntry
from ossimport_dist.storage.errors import RequestFailed
from ossimport_dist.storage.http import HttpSource
from ossimport_dist.storage.httpclient import HttpClient, Origin, ResponseStream, origin_of

BODY = bytes(range(256)) * 64  # 16 KiB: more than one read of a stream


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the server says otherwise

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.connections += 1

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path == "/hangup":
            self.close_connection = True  # no answer at all
            return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"short" if self.path == "/short" else BODY
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(body)
        # The server forgets a connection it promised to keep, as an idle timeout does: the
        # client learns only when it sends the next request on it.
        self.close_connection = self.server.forget or self.path == "/short"

    do_PUT = do_GET


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.connections, srv.requests, srv.forget = 0, [], False
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.origin = Origin("http", "127.0.0.1", srv.server_address[1])
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def client():
    c = HttpClient(connect_timeout=2, read_timeout=2, role="dest")
    yield c
    c.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_thread_reuses_its_connection(server, client):
    for _ in range(3):
        status, headers, body = client.fetch(server.origin, "GET", "/a", {})
        assert (status, headers["content-length"], body) == (200, str(len(BODY)), BODY)
    assert (server.connections, server.requests) == (1, ["/a"] * 3)


def test_each_thread_has_its_own_connection(server, client):
    answers = []

    def ask():
        answers.append(client.fetch(server.origin, "GET", "/t", {})[0])

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    # Even one after the other: an idle connection belongs to the thread that used it.
    assert answers == [200, 200] and server.connections == 2


def test_a_connection_the_server_closed_while_idle_is_sent_again_once(server, client):
    server.forget = True
    assert client.fetch(server.origin, "GET", "/first", {})[0] == 200
    status, _, body = client.fetch(server.origin, "PUT", "/second", {}, body=b"payload")
    assert (status, body) == (200, BODY)
    # The request reached the server once, on the second connection: no duplicate, no failure.
    assert (server.connections, server.requests) == (2, ["/first", "/second"])


def test_a_fresh_connection_that_breaks_is_a_real_failure_not_retried(server, client):
    with pytest.raises(RequestFailed) as info:
        client.fetch(server.origin, "GET", "/hangup", {})
    failure = info.value
    assert (failure.status, failure.code, failure.retryable, failure.unreachable) == \
        (0, "RemoteDisconnected", True, False)
    assert server.requests == ["/hangup"] and server.connections == 1


def test_a_refused_port_never_connected_and_names_whose_endpoint(client):
    port = free_port()
    with pytest.raises(RequestFailed) as info:
        client.fetch(Origin("http", "127.0.0.1", port), "GET", "/", {})
    failure = info.value
    assert (failure.status, failure.code, failure.unreachable, failure.role, failure.retryable) == \
        (0, "ConnectionRefusedError", True, "dest", True)
    assert failure.message.startswith(f"cannot connect to http://127.0.0.1:{port}: ")
    assert str(failure).startswith("network error ConnectionRefusedError cannot connect to")


def test_a_refused_url_names_the_request():
    port = free_port()
    url = f"http://127.0.0.1:{port}/x"
    c = HttpClient(role="src")
    with pytest.raises(RequestFailed) as info:
        c.send(origin_of(url), "GET", "/x", {}, label=url, operation="GET", key=url)
    assert str(info.value).startswith(f"GET {url}: network error ConnectionRefusedError cannot connect")


def test_a_silent_server_times_out_within_the_read_bound():
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        c = HttpClient(connect_timeout=0.3, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(RequestFailed) as info:
            c.fetch(Origin("http", "127.0.0.1", silent.getsockname()[1]), "GET", "/", {}, label="silent")
        assert time.monotonic() - started < 1.5
        c.close()
    failure = info.value
    assert (failure.status, failure.code, failure.retryable, failure.unreachable) == \
        (0, "Timeout", True, False)
    assert failure.message.startswith("silent: ")


def test_a_stream_read_to_its_end_gives_its_connection_back(server, client):
    conn, resp = client.send(server.origin, "GET", "/stream", {})
    stream = ResponseStream(client, conn, resp, "stream")
    assert b"".join(iter(lambda: stream.read(1000), b"")) == BODY
    stream.close()
    assert client.fetch(server.origin, "GET", "/after", {})[2] == BODY
    assert server.connections == 1


def test_a_stream_closed_half_read_drops_its_connection(server, client):
    conn, resp = client.send(server.origin, "GET", "/stream", {})
    stream = ResponseStream(client, conn, resp, "stream")
    assert stream.read(10) == BODY[:10]
    stream.close()
    # The unread bytes are not taken for the next answer: that goes on a new connection.
    assert client.fetch(server.origin, "GET", "/after", {})[2] == BODY
    assert server.connections == 2


def test_a_body_cut_short_is_a_retryable_incomplete_body(server, client):
    conn, resp = client.send(server.origin, "GET", "/short", {})
    stream = ResponseStream(client, conn, resp, "the short one", key="short")
    with pytest.raises(RequestFailed) as info:
        stream.read()
    assert info.value.code == "IncompleteBody" and info.value.retryable
    assert info.value.message == f"the short one: body ended after 5 of {len(BODY)} bytes (Content-Length)"
    stream.close()


@pytest.mark.parametrize("url, problem", [("http:///nohost", "no host"),
                                          ("http://h:99999/", "Port out of range")])
def test_a_url_without_a_usable_origin_is_a_value_error(url, problem):
    with pytest.raises(ValueError, match=problem):
        origin_of(url)


@pytest.mark.parametrize("target", ["http://127.0.0.1:99999/x", "http://:80/x"])
def test_a_redirect_to_a_url_without_a_usable_origin_is_refused_not_a_traceback(tmp_path, server, target):
    listing = tmp_path / "urls.list"
    listing.write_text(f"{server.origin.url}/ redirect\n")
    server.redirect_to = target
    src = HttpSource(str(listing))
    with pytest.raises(RequestFailed) as info:
        src.open(ObjectEntry("redirect", 0))
    src.close()
    assert (info.value.status, info.value.code, info.value.retryable) == (302, "BadRedirect", False)
    assert f"redirects to '{target}': " in info.value.message


def test_a_closed_client_opens_a_fresh_connection_when_asked_again(server, client):
    assert client.fetch(server.origin, "GET", "/a", {})[0] == 200
    client.close()
    assert client.fetch(server.origin, "GET", "/b", {})[0] == 200
    assert server.connections == 2
