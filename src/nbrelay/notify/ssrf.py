"""Which webhook URLs may be called: http or https, and a host that resolves only to public addresses —
no loopback, private, link-local, multicast or reserved ones — unless the settings allow private targets.

Checked at registration and again at each send, after DNS resolution; the request then goes to the address
that was checked (a name that resolves elsewhere the second time cannot slip past).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from nbrelay.errors import Unprocessable

URL_MAX_CHARS = 2048
_PORTS = {"http": 80, "https": 443}
# Look-ups run in threads of their own: a resolver that hangs then holds these, never the threads the rest of
# the server shares (asyncio's default executor: reports, steps, kernels).
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nbrelay-dns")


class UrlRefused(Unprocessable):
    code = "webhook_url_refused"


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: where to connect (`address`) and what to say to it (`host` for Host and TLS SNI)."""

    url: SplitResult
    host: str
    port: int
    address: str

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (the Host header keeps the name)."""
        ip = f"[{self.address}]" if ":" in self.address else self.address
        path = self.url.path or "/"
        query = f"?{self.url.query}" if self.url.query else ""
        return f"{self.url.scheme}://{ip}:{self.port}{path}{query}"

    @property
    def host_header(self) -> str:
        default = _PORTS[self.url.scheme]
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def parse_url(url: str) -> SplitResult:
    """`url` split, if it is an absolute http(s) URL with a host and no credentials; else UrlRefused."""
    if len(url) > URL_MAX_CHARS:
        raise UrlRefused(f"a webhook URL has at most {URL_MAX_CHARS} characters")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise UrlRefused(f"not a usable URL: {exc}") from None
    if parts.scheme not in _PORTS:
        raise UrlRefused(f"a webhook URL must start with http:// or https://, got {url[:60]!r}")
    if not parts.hostname:
        raise UrlRefused(f"a webhook URL needs a host, got {url[:60]!r}")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("a webhook URL may not carry a user name or password (the signature proves who sent it)")
    return parts


def address_refused(address: str) -> str | None:
    """Why `address` may not be called, or None when it is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is a {kind.replace('_', '-')} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


async def resolve(url: str, *, allow_private: bool) -> Target:
    """The checked target of `url`: parsed, resolved, every address allowed; else UrlRefused."""
    parts = parse_url(url)
    host = parts.hostname or ""
    port = parts.port or _PORTS[parts.scheme]
    try:
        lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = await asyncio.get_running_loop().run_in_executor(_RESOLVER, lookup)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"the host {host!r} cannot be resolved: {exc}", code="webhook_host_unknown") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UrlRefused(f"the host {host!r} has no address", code="webhook_host_unknown")
    if not allow_private:
        # Every address, not the first: a name with one public and one private address is refused.
        for address in addresses:
            why = address_refused(address)
            if why is not None:
                where = why if host == address else f"{host} resolves to {why}"
                raise UrlRefused(
                    f"{where}; webhooks may only call public addresses",
                    hint="set NBRELAY_WEBHOOK_ALLOW_PRIVATE=true to allow private targets (trusted networks only)",
                )
    return Target(parts, host, port, addresses[0])
