"""The outbound URL guard: hostile URLs are refused at save and at send, and nothing is contacted."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core.exceptions import ValidationError

from perfops import netguard
from perfops.access.models import AllowedHost

# Each is refused even when its host is on the allowlist (without "allow private").
PRIVATE = [
    "http://127.0.0.1/",
    "http://127.1/",
    "http://127.0.0.2:8080/hook",
    "http://0.0.0.0/",
    "http://2130706433/",  # 127.0.0.1 in decimal
    "http://0x7f000001/",  # in hex
    "http://0177.0.0.1/",  # in octal
    "http://0x7f.0.0.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://localhost/",
    "http://localhost:6379/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://169.254.0.1/",
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://100.127.255.254/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://192.0.0.1/",
    "http://198.18.0.1/",  # benchmarking range
    "http://240.0.0.1/",  # reserved
    "https://127.0.0.1/",
    "http://[::]/",
]
# Refused before any lookup: scheme, credentials, malformed.
MALFORMED = [
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "javascript:alert(1)",
    "dict://127.0.0.1:6379/info",
    "http://user:pass@example.com/",
    "http://example.com@127.0.0.1/",
    "http://127.0.0.1#@example.com/",
    "http:///nohost",
    "http://example.com:99999/",
    "http://exa mple.com/",
    "http://example.com/\r\nHost: evil",
    "",
]


@pytest.fixture
def listener():
    """A socket on 127.0.0.1 that records whether anything connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.3)
    yield server
    server.close()


def allow(url: str, *, private: bool = False) -> None:
    host = netguard._host_of(url)[1] if url.startswith("http") else ""
    if host:
        AllowedHost.objects.get_or_create(host=host, defaults={"allow_private": private})


@pytest.mark.parametrize("url", PRIVATE)
def test_private_and_metadata_addresses_are_refused_even_for_an_allowed_host(db, url):
    with pytest.raises(netguard.UnsafeURL, match="not on the allowlist"):
        netguard.check_url(url)
    allow(url)
    with pytest.raises(netguard.UnsafeURL, match="non-public address"):
        netguard.check_url(url)


@pytest.mark.parametrize("url", MALFORMED)
def test_other_schemes_credentials_and_malformed_urls_are_refused(db, url):
    AllowedHost.objects.create(host="example.com")
    with pytest.raises(netguard.UnsafeURL):
        netguard.check_url(url)


def test_hosts_not_on_the_allowlist_are_refused_and_wildcards_match_subdomains(db):
    AllowedHost.objects.create(host="*.example.org")
    assert netguard.check_url("https://hooks.example.org/x", resolve=False).host == "hooks.example.org"
    for url in ("https://example.org/", "https://example.org.evil.com/", "https://evilexample.org/"):
        with pytest.raises(netguard.UnsafeURL, match="not on the allowlist"):
            netguard.check_url(url, resolve=False)


def test_the_listener_sees_no_connection_from_refused_urls(db, listener):
    port = listener.getsockname()[1]
    urls = [
        f"http://{host}:{port}/"
        for host in ("127.0.0.1", "2130706433", "0x7f000001", "localhost", "[::ffff:127.0.0.1]")
    ]
    for url in urls:
        allow(url)
        with pytest.raises(netguard.UnsafeURL):
            netguard.send(url, b"{}", {"Content-Type": "application/json"})
    with pytest.raises(TimeoutError):
        listener.accept()


def test_an_explicitly_allowed_internal_host_is_called_and_its_redirect_is_not_followed(db):
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/hook?a=1"
    AllowedHost.objects.create(host="127.0.0.1", allow_private=True)
    reply = netguard.send(url, b'{"ok": true}', {"Content-Type": "application/json"})
    thread.join(5)
    server.server_close()
    assert reply.status == 302
    assert hits == ["/hook?a=1"]


def test_the_allowlist_refuses_malformed_entries(db):
    for bad in ("http://x.com", "a b", "*.127.0.0.1", "x.com/path", "user@x.com"):
        with pytest.raises(ValidationError):
            AllowedHost(host=bad).full_clean()
    entry = AllowedHost(host="[::1]")
    entry.full_clean()
    assert entry.host == "::1"
