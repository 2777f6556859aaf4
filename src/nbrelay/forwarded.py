"""What the browser sees when a proxy (nginx) stands in front: its own address, and the scheme and host of the
public URL. X-Forwarded-For/-Proto/-Host count only when the TCP peer is a trusted proxy; anyone can send them.

Pure functions: headers and the peer address in, a PublicView out. Values that do not parse are ignored, never
guessed at: the view then falls back to what the connection itself says (the peer, the Host header).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# host[:port] as a browser puts it in Host and Origin: a DNS name, an IPv4 address, or a bracketed IPv6 one.
_HOST = re.compile(r"^(?:\[(?P<ipv6>[0-9a-f:.]+)\]|[a-z0-9](?:[a-z0-9_.-]{0,251}[a-z0-9])?)(?::(?P<port>[0-9]{1,5}))?$")
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


@dataclass(frozen=True, slots=True)
class PublicView:
    """host: what the browser addressed (host[:port], lower case), None when unknown. scheme: "http" or "https"
    as the browser used it, None when no trusted proxy said. client: the browser's address as far as known."""

    host: str | None
    scheme: str | None
    client: str | None
    proxied: bool  # the forwarded headers were applied (the peer is a trusted proxy)


@lru_cache(maxsize=32)
def _networks(specs: tuple[str, ...]) -> tuple[Network, ...]:
    found: list[Network] = []
    for spec in specs:
        try:
            found.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            continue  # a bad entry in the setting trusts nothing
    return tuple(found)


def parse_address(text: str | None) -> Address | None:
    """An IP address from a peer or an X-Forwarded-For entry: "1.2.3.4", "1.2.3.4:5678", "::1", "[::1]:80"."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port; a bare IPv6 address has two colons or more
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket is 127.0.0.1
    return address


def address_trusted(host: str | None, trusted: Sequence[str]) -> bool:
    """Whether the address is one of the trusted proxies (addresses or networks, e.g. 10.0.0.0/8)."""
    address = parse_address(host)
    return address is not None and any(address in network for network in _networks(tuple(trusted)))


def header_lines(headers: Mapping[str, str], name: str) -> list[str]:
    """Every line of a header (a proxy may add a line rather than a value): Starlette's `getlist`, websockets'
    `get_all`, or the one value of a plain mapping."""
    for method in ("getlist", "get_all"):
        get_all = getattr(headers, method, None)
        if callable(get_all):
            return list(get_all(name))
    value = headers.get(name)
    return [] if value is None else [value]


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every comma-separated value of a header, all its lines in order."""
    return [value.strip() for line in header_lines(headers, name) for value in line.split(",")]


def _client(chain: list[str], peer: str | None, trusted: Sequence[str]) -> str | None:
    """The right-most hop that is not a trusted proxy: each proxy appends the address it was talking to, so
    entries left of the first untrusted one were written by the client and prove nothing."""
    client = peer
    for entry in reversed(chain):
        address = parse_address(entry)
        if address is None:
            break  # garbage where a proxy should have written an address: keep the last hop we can vouch for
        client = str(address)
        if not address_trusted(client, trusted):
            break
    return client


def public_host(value: str | None) -> str | None:
    """A Host or X-Forwarded-Host value checked as host[:port] and lower-cased; None when it is not one."""
    if not value:
        return None
    host = value.strip().lower()
    match = _HOST.match(host)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) <= 65535):
        return None
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return None
    return host


def public_view(headers: Mapping[str, str], peer_host: str | None, trusted_proxies: Sequence[str]) -> PublicView:
    """The browser's view of a request. `headers` with lower-case names (ASGI, Starlette), `peer_host` the TCP
    peer's address. From a trusted proxy: the right-most untrusted X-Forwarded-For hop, the first
    X-Forwarded-Proto and X-Forwarded-Host values (what the proxy facing the browser set); else the connection's."""
    hosts = header_lines(headers, "host")
    own_host = public_host(hosts[0]) if len(hosts) == 1 else None  # two Host lines: a smuggling attempt
    if not address_trusted(peer_host, trusted_proxies):
        return PublicView(host=own_host, scheme=None, client=peer_host, proxied=False)
    chain = [value for value in _values(headers, "x-forwarded-for") if value]
    proto = next(iter(_values(headers, "x-forwarded-proto")), "")
    forwarded_host = next(iter(_values(headers, "x-forwarded-host")), "")
    return PublicView(
        host=public_host(forwarded_host) or own_host,
        scheme=_SCHEMES.get(proto.lower()),
        client=_client(chain, peer_host, trusted_proxies),
        proxied=True,
    )
