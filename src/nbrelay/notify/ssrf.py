"""Which webhook URLs may be called: http or https, and a host that resolves only to public addresses —
no loopback, private, link-local, multicast or reserved ones — unless the settings allow private targets; and
never the service itself (its listening address, or its public URL), whatever the settings.

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

from nbrelay.config import Settings
from nbrelay.errors import Unprocessable

URL_MAX_CHARS = 2048
_PORTS = {"http": 80, "https": 443}
# Look-ups run in threads of their own: a resolver that hangs then holds these, never the threads the rest of
# the server shares (asyncio's default executor: reports, steps, kernels).
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nbrelay-dns")
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    """Why `address` may not be called ("10.1.2.3 is a private address"), or None when it is a public unicast
    address."""
    kind = _kind(ipaddress.ip_address(address.split("%", 1)[0]))
    return None if kind is None else f"{address} is {kind}"


# Most specific first: 169.254.0.0/16 is private too, but link-local says what it is (cloud metadata lives there).
_KINDS = (
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_unspecified", "an unspecified address"),
    ("is_reserved", "a reserved address"),
    ("is_private", "a private address"),
)


def _kind(ip: _Address) -> str | None:
    """What sort of non-public address `ip` is, as a phrase ("a link-local address"); None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4-mapped address is that IPv4 address, to the host's own stack: it is judged as that one alone.
        if ip.ipv4_mapped is not None:
            inner = _kind(ip.ipv4_mapped)
            return None if inner is None else f"an IPv4-mapped address for {ip.ipv4_mapped} ({inner})"
        # 6to4 and Teredo addresses reach the IPv4 address they carry through a relay: 2002:a9fe:a9fe:: is the
        # cloud metadata service at 169.254.169.254.
        teredo_client = ip.teredo[1] if ip.teredo else None
        for carried, how in ((ip.sixtofour, "a 6to4"), (teredo_client, "a Teredo")):
            if carried is not None and (inner := _kind(carried)) is not None:
                return f"{how} address for {carried} ({inner})"
    for test, kind in _KINDS:
        if getattr(ip, test):
            return kind
    return None if ip.is_global else "not a public address"


@dataclass(frozen=True, slots=True)
class Itself:
    """Where this service can be reached: the address it listens on and its public URL. A webhook may call
    neither: a job.failed hook that runs the failing notebook's schedule would make jobs without end."""

    host: str
    port: int
    public_url: str = ""

    @classmethod
    def of(cls, settings: Settings) -> Itself:
        return cls(settings.host, settings.port, settings.public_url)


async def resolve(url: str, *, allow_private: bool, itself: Itself | None = None) -> Target:
    """The checked target of `url`: parsed, resolved, every address allowed and none of them `itself`'s; else
    UrlRefused."""
    parts = parse_url(url)
    host = parts.hostname or ""
    port = parts.port or _PORTS[parts.scheme]
    try:
        addresses = await _lookup(host, port)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"the host {host!r} cannot be resolved: {exc}", code="webhook_host_unknown") from None
    if not addresses:
        raise UrlRefused(f"the host {host!r} has no address", code="webhook_host_unknown")
    if not allow_private:
        # Every address, not the first: a name with one public and one private address is refused.
        for address in addresses:
            kind = _kind(ipaddress.ip_address(address.split("%", 1)[0]))
            if kind is not None:
                where = f"{address} is {kind}" if host == address else f"{host} resolves to {address}, {kind}"
                raise UrlRefused(
                    f"{where}; webhooks may only call public addresses",
                    hint="set NBRELAY_WEBHOOK_ALLOW_PRIVATE=true to allow private targets (trusted networks only)",
                )
    if itself is not None:
        own = await _which_of_itself(parts, port, addresses, itself)
        if own is not None:
            raise UrlRefused(
                f"{host}:{port} is this service itself ({own}); a webhook may not call nbrelay, or a job's end "
                "could start jobs whose ends call it again, without end",
                code="webhook_calls_itself",
                hint="point the webhook at another service",
            )
    return Target(parts, host, port, addresses[0])


async def _lookup(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, each once."""
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    infos = await asyncio.get_running_loop().run_in_executor(_RESOLVER, lookup)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _which_of_itself(url: SplitResult, port: int, addresses: list[str], itself: Itself) -> str | None:
    """Which of `itself`'s addresses `url` (on `port`, resolved to `addresses`) is, described; None when
    neither."""
    targets = {_ip(a) for a in addresses}
    if itself.public_url and await _under_public_url(url, port, targets, itself.public_url):
        return f"NBRELAY_PUBLIC_URL is {itself.public_url}"
    if port == itself.port:  # where it listens, every path is its own
        listening = f"it listens on {itself.host}:{itself.port}"
        if itself.host in ("", "0.0.0.0", "::"):  # every address of this machine
            if any(_is_local(ip) for ip in targets):
                return listening
        elif targets & await _addresses_quietly(itself.host, port):
            return listening
    return None


async def _under_public_url(url: SplitResult, port: int, targets: set[_Address], public_url: str) -> bool:
    """Whether `url` is at or under `public_url`: the same port, the same host by name or by address (another name
    of the same machine reaches it as well), and its path under the public one (a proxy in front may serve other
    applications beside nbrelay)."""
    public = urlsplit(public_url)
    public_host = public.hostname or ""
    if not public_host or port != (public.port or _PORTS.get(public.scheme, 443)):
        return False
    if not (url.path.rstrip("/") + "/").startswith(public.path.rstrip("/") + "/"):
        return False
    return (url.hostname or "").lower() == public_host.lower() or bool(
        targets & await _addresses_quietly(public_host, port)
    )


async def _addresses_quietly(host: str, port: int) -> set[_Address]:
    """The addresses of one of the service's own names; none when it does not resolve here."""
    try:
        return {_ip(a) for a in await _lookup(host, port)}
    except (OSError, UnicodeError):
        return set()


def _ip(address: str) -> _Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_local(ip: _Address) -> bool:
    """Whether `ip` is one of this machine's addresses: only those can be bound to."""
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True
