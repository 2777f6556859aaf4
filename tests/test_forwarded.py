"""Forwarded headers: trusted only from configured proxies; chains, IPv6 and garbage; the Origin check on top."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers
from websockets.datastructures import Headers as WebsocketsHeaders

from nbrelay.auth import origin_allowed, request_origin_allowed
from nbrelay.config import Settings
from nbrelay.forwarded import PublicView, address_trusted, parse_address, public_host, public_view

PROXIES = ["127.0.0.1", "::1", "10.0.0.0/8"]


def view(peer: str | None, **headers: str) -> PublicView:
    return public_view({k.replace("_", "-"): v for k, v in headers.items()}, peer, PROXIES)


def test_from_a_trusted_proxy_the_forwarded_values_count() -> None:
    seen = view(
        "127.0.0.1",
        host="127.0.0.1:8765",
        x_forwarded_for="203.0.113.7",
        x_forwarded_proto="https",
        x_forwarded_host="Public.Example",
    )
    assert seen == PublicView(host="public.example", scheme="https", client="203.0.113.7", proxied=True)


def test_from_any_other_peer_they_are_ignored() -> None:
    spoofed = view(
        "198.51.100.4",
        host="nbrelay.example",
        x_forwarded_for="127.0.0.1",
        x_forwarded_proto="https",
        x_forwarded_host="trusted.example",
    )
    assert spoofed == PublicView(host="nbrelay.example", scheme=None, client="198.51.100.4", proxied=False)
    assert view(None, host="a.example", x_forwarded_host="b.example").host == "a.example"


def test_a_trusted_proxy_that_says_nothing_leaves_the_connection_as_it_is() -> None:
    assert view("10.1.2.3", host="internal:8765") == PublicView("internal:8765", None, "10.1.2.3", proxied=True)


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        # nginx appends the address it talks to: everything left of it was written by the client itself.
        ("6.6.6.6, 203.0.113.7", "203.0.113.7"),
        # Through two trusted proxies (a load balancer on 10/8, then nginx), the first untrusted hop from the right.
        ("203.0.113.7, 10.0.0.5", "203.0.113.7"),
        ("6.6.6.6,203.0.113.7,10.0.0.5,10.0.0.6", "203.0.113.7"),
        # Only proxies: the left-most is the best known.
        ("10.0.0.9, 10.0.0.5", "10.0.0.9"),
        # Garbage where a trusted proxy should have written an address: stop at the last hop vouched for.
        ("203.0.113.7, unknown, 10.0.0.5", "10.0.0.5"),
        ("_hidden", "127.0.0.1"),
        ("", "127.0.0.1"),
        (" , ,", "127.0.0.1"),
        # Ports and IPv6, bracketed or not; an IPv4-mapped IPv6 address is its IPv4 address.
        ("203.0.113.7:51234", "203.0.113.7"),
        ("2001:db8::7", "2001:db8::7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("2001:db8::7, ::1", "2001:db8::7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
    ],
)
def test_client_is_the_right_most_untrusted_hop(chain: str, client: str) -> None:
    assert view("127.0.0.1", host="h", x_forwarded_for=chain).client == client


def test_several_header_lines_are_one_list() -> None:
    headers = Headers(raw=[(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.7, 10.0.0.5")])
    assert public_view(headers, "::1", PROXIES).client == "203.0.113.7"
    headers = Headers(raw=[(b"x-forwarded-proto", b"https, http"), (b"x-forwarded-proto", b"http")])
    assert public_view(headers, "::1", PROXIES).scheme == "https"  # the first: what the browser used


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [("https", "https"), ("HTTP", "http"), (" https , http", "https"), ("wss", "https"), ("ws", "http")],
)
def test_proto(proto: str, scheme: str) -> None:
    assert view("127.0.0.1", x_forwarded_proto=proto).scheme == scheme


@pytest.mark.parametrize("proto", ["ftp", "", "https://", "javascript", "h t t p s", "http\x00"])
def test_a_bad_proto_is_ignored(proto: str) -> None:
    assert view("127.0.0.1", x_forwarded_proto=proto).scheme is None


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("public.example", "public.example"),
        ("Public.Example:8443", "public.example:8443"),
        ("public.example, internal:8765", "public.example"),
        ("[2001:DB8::1]:8443", "[2001:db8::1]:8443"),
        ("[::1]", "[::1]"),
        ("203.0.113.7:443", "203.0.113.7:443"),
        ("my_host", "my_host"),
    ],
)
def test_forwarded_host(value: str, host: str) -> None:
    assert view("127.0.0.1", host="127.0.0.1:8765", x_forwarded_host=value).host == host


@pytest.mark.parametrize(
    "value",
    [
        "evil.example/path",
        "evil.example:99999",
        "evil.example:0",
        "evil.example:",
        "user@evil.example",
        "[zz::1]",
        "[::1",
        "::1",
        "a b",
        "-evil.example",
        "evil.example\r\nx: y",
        "é.example",
        "x" * 300,
    ],
)
def test_a_bad_forwarded_host_falls_back_to_host(value: str) -> None:
    assert view("127.0.0.1", host="127.0.0.1:8765", x_forwarded_host=value).host == "127.0.0.1:8765"
    assert public_host(value) is None


def test_trusted_proxies_setting() -> None:
    assert address_trusted("10.200.0.1", ["10.0.0.0/8"])
    assert address_trusted("::ffff:127.0.0.1", ["127.0.0.1"])
    assert address_trusted("::1", ["::1"])
    assert not address_trusted("::1", ["127.0.0.1"])
    assert not address_trusted("11.0.0.1", ["10.0.0.0/8", "not an address"])
    assert not address_trusted(None, ["0.0.0.0/0"])
    assert not address_trusted("testclient", ["127.0.0.1"])  # Starlette's TestClient peer
    assert parse_address("1.2.3.4:80") == parse_address("1.2.3.4")
    assert parse_address("[::1") is None


# The Origin check -----------------------------------------------------------------------------------------------


def settings(**overrides: object) -> Settings:
    return Settings(trusted_proxies=["127.0.0.1"], **overrides)  # type: ignore[arg-type]


def behind_nginx(origin: str, **extra: str) -> dict[str, str]:
    """A handshake as nginx forwards it with the Host rewritten to the upstream address."""
    return {
        "host": "127.0.0.1:8765",
        "origin": origin,
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "public.example",
        **extra,
    }


def test_origin_behind_a_trusted_proxy_is_the_public_one() -> None:
    ok = settings()
    assert request_origin_allowed(behind_nginx("https://public.example"), "127.0.0.1", ok)
    assert request_origin_allowed(behind_nginx("https://public.example:443"), "127.0.0.1", ok)
    assert not request_origin_allowed(behind_nginx("https://evil.example"), "127.0.0.1", ok)
    # Another scheme is another origin: a plain-http page may not drive the https service.
    assert not request_origin_allowed(behind_nginx("http://public.example"), "127.0.0.1", ok)
    # The upstream address nginx rewrote Host to is not what the browser's page is on.
    assert not request_origin_allowed(behind_nginx("http://127.0.0.1:8765"), "127.0.0.1", ok)
    port = behind_nginx("https://public.example:8443", **{"x-forwarded-host": "public.example:8443"})
    assert request_origin_allowed(port, "127.0.0.1", ok)
    assert not request_origin_allowed(behind_nginx("https://public.example:8443"), "127.0.0.1", ok)


def test_origin_from_an_untrusted_peer_sees_only_host() -> None:
    ok = settings()
    # The forwarded headers of a peer that is no proxy change nothing: its Host is what counts.
    assert not request_origin_allowed(behind_nginx("https://public.example"), "198.51.100.4", ok)
    assert request_origin_allowed(behind_nginx("http://127.0.0.1:8765"), "198.51.100.4", ok)
    # A TLS proxy that is not trusted but keeps Host still works: the scheme is unknown, so not compared.
    direct = {"host": "public.example", "origin": "https://public.example"}
    assert request_origin_allowed(direct, "198.51.100.4", ok)


def test_origin_rules_that_do_not_change() -> None:
    ok = settings()
    assert request_origin_allowed({"host": "127.0.0.1:8765"}, "127.0.0.1", ok)  # no Origin: not a browser
    assert not request_origin_allowed({"origin": "https://public.example"}, "127.0.0.1", ok)  # no host at all
    listed = settings(allowed_origins=["https://app.example"])
    assert request_origin_allowed(behind_nginx("https://app.example"), "127.0.0.1", listed)
    assert not request_origin_allowed(behind_nginx("https://public.example"), "127.0.0.1", listed)
    assert request_origin_allowed(behind_nginx("https://x.example"), "127.0.0.1", settings(allowed_origins=["*"]))
    for garbage in ("null", "https://", "public.example", "https://public.example:99999", "file:///etc"):
        assert not request_origin_allowed(behind_nginx(garbage), "127.0.0.1", ok), garbage


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "allowed"),
    [
        ("http://127.0.0.1:8765", "127.0.0.1:8765", None, True),
        ("http://localhost:8765", "127.0.0.1:8765", None, False),
        ("https://public.example", "public.example:443", "https", True),
        ("http://public.example", "public.example:80", None, True),
        ("https://public.example", "public.example:80", None, False),
        ("http://[::1]:8765", "[::1]:8765", None, True),
        ("HTTP://PUBLIC.example", "public.EXAMPLE", None, True),
    ],
)
def test_origin_allowed(origin: str, host: str, scheme: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, host, settings(), scheme) is allowed


def test_headers_of_every_kind_the_transports_have() -> None:
    raw = [(b"host", b"127.0.0.1:8765"), (b"origin", b"https://public.example")]
    raw += [(b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"public.example")]
    starlette_headers = Headers(raw=raw)
    websockets_headers = WebsocketsHeaders([(k.decode().title(), v.decode()) for k, v in raw])
    for headers in (starlette_headers, websockets_headers, {k.decode(): v.decode() for k, v in raw}):
        assert request_origin_allowed(headers, "127.0.0.1", settings()), type(headers)
    # Two Origin lines or two Host lines are no browser's: refused, whichever one a check would have read.
    for extra in ((b"origin", b"https://public.example"), (b"host", b"public.example")):
        assert not request_origin_allowed(Headers(raw=[*raw, extra]), "198.51.100.4", settings())
        doubled = WebsocketsHeaders([(k.decode(), v.decode()) for k, v in [*raw, extra]])
        assert not request_origin_allowed(doubled, "198.51.100.4", settings())


def test_trusted_proxies_and_origins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """As docs/deploy.md writes them: comma lists (a JSON list works too)."""
    monkeypatch.setenv("NBRELAY_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
    monkeypatch.setenv("NBRELAY_ALLOWED_ORIGINS", '["https://app.example", "https://other.example"]')
    monkeypatch.setenv("NBRELAY_ADMIN_USERS", "alice,bob")
    read = Settings()
    assert read.trusted_proxies == ["127.0.0.1", "10.0.0.0/8"]
    assert read.allowed_origins == ["https://app.example", "https://other.example"]
    assert read.admin_users == ["alice", "bob"]
