"""Who a request comes from, in the three auth modes, and whether its Origin may talk to us.

none: everyone is the local user (admin). token: an API token (Bearer header or ?token= on WebSocket/SSE) or
the signed session cookie a token was traded for. header: a user name in a header set by a trusted SSO proxy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from nbrelay.config import Settings
from nbrelay.files import atomic_write
from nbrelay.forwarded import address_trusted, header_lines, public_view
from nbrelay.jobs import User
from nbrelay.store.base import JobStore, check_user_name

SESSION_COOKIE = "nbrelay_session"
TOKEN_PREFIX = "nbr_"
# How long a token's check is reused: a revoke shows within this on requests, and within this and a push
# connection's check interval (push/service.py) on live connections, together within the 30 s docs/protocol.md says.
_TOKEN_CACHE_S = 25.0
# Client addresses whose failures are remembered; past this the oldest is forgotten, so that a flood of addresses
# costs bounded memory (each of them could only ever try auth_max_failures tokens per window anyway).
_MAX_TRACKED_CLIENTS = 10_000


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Tokens are 256 random bits: a plain SHA-256 is enough, no password hashing needed.
    return hashlib.sha256(token.encode()).hexdigest()


def load_secret(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / "secret_key"
    if not path.exists():
        atomic_write(path, secrets.token_hex(32).encode(), mode=0o600)
    return Path(path).read_bytes().strip()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Session cookies: {"u": name, "t": the id of the token it was traded for, "exp": unix time}, HMAC-SHA256
    signed. Who the user is, and whether an admin, is the token's to say while it lasts (Authenticator)."""

    def __init__(self, secret: bytes, max_age_s: float):
        self.secret = secret
        self.max_age_s = max_age_s

    def sign(self, name: str, token_id: int, now: float | None = None) -> str:
        payload = {"u": name, "t": token_id, "exp": int((now or time.time()) + self.max_age_s)}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())}"

    def verify(self, value: str, now: float | None = None) -> tuple[str, int] | None:
        """(user name, token id) of a cookie this server signed and that has not expired."""
        body, _, signature = value.partition(".")
        expected = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        if not signature or not hmac.compare_digest(signature, expected):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("exp", 0) < (now or time.time()):
            return None
        token_id = payload.get("t")  # none in cookies of earlier versions: signed in again
        if not isinstance(token_id, int) or isinstance(token_id, bool):
            return None
        return str(payload.get("u")), token_id


class FailureLimit:
    """Failed token checks per client address, in fixed windows: the first failure opens a window of `window_s`;
    once `max_failures` fell in it, the address is refused until it ends. No I/O; the clock is passed in."""

    def __init__(self, max_failures: int, window_s: float, max_clients: int = _MAX_TRACKED_CLIENTS):
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # client → (window start, failures)

    def retry_after_s(self, client: str, now: float) -> float:
        """How long the client must wait before its next token check; 0 when it may check one now."""
        window = self._windows.get(client)
        if self.max_failures == 0 or window is None:
            return 0.0
        start, failures = window
        left = start + self.window_s - now
        if left <= 0:
            del self._windows[client]
            return 0.0
        return left if failures >= self.max_failures else 0.0

    def failed(self, client: str, now: float) -> None:
        if self.max_failures == 0:
            return
        start, failures = self._windows.pop(client, (now, 0))
        if now - start >= self.window_s:
            start, failures = now, 0
        self._windows[client] = (start, failures + 1)  # last in the order: the most recent
        while len(self._windows) > self.max_clients:
            self._windows.popitem(last=False)


class Authenticator:
    def __init__(self, settings: Settings, store: JobStore):
        self.settings = settings
        self.store = store
        self.signer = SessionSigner(load_secret(settings), settings.session_max_age_s)
        self._cache: dict[str, tuple[float, User | None]] = {}
        self._tokens_of: dict[str, tuple[float, dict[int, bool]]] = {}  # name → (when read, token id → admin)
        self.failures = FailureLimit(settings.auth_max_failures, settings.auth_failure_window_s)

    @property
    def mode(self) -> str:
        return self.settings.auth_mode

    async def user_for_token(self, token: str) -> User | None:
        return await self._user_for_digest(hash_token(token))

    async def _user_for_digest(self, digest: str) -> User | None:
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[0] < _TOKEN_CACHE_S:
            return cached[1]
        record = await self.store.find_token(digest)
        user = User(record.name, record.admin, proof=("token", digest)) if record is not None else None
        if record is not None:
            await self.store.touch_token(record.id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, user)
        return user

    def forget_tokens(self) -> None:
        self._cache.clear()
        self._tokens_of.clear()

    async def session_user(self, cookie: str) -> User | None:
        """The user of a session cookie while the token it was traded for lasts: a revoked token ends its sessions
        (within the token cache's 30 s, as its own use), and the admin flag is the token's now, not the
        cookie's."""
        signed = self.signer.verify(cookie)
        if signed is None:
            return None
        name, token_id = signed
        admin = await self._admin_of(name, token_id)
        return User(name, admin, proof=("session", name, token_id)) if admin is not None else None

    async def _admin_of(self, name: str, token_id: int) -> bool | None:
        """Whether token `token_id` of `name` is an admin's; None when it is no more (revoked)."""
        now = time.monotonic()
        cached = self._tokens_of.get(name)
        if cached is None or now - cached[0] >= _TOKEN_CACHE_S:
            if len(self._tokens_of) > 10_000:
                self._tokens_of.clear()
            cached = (now, {record.id: record.admin for record in await self.store.list_tokens(name)})
            self._tokens_of[name] = cached
        return cached[1].get(token_id)

    async def still_signed_in(self, user: User) -> bool:
        """Whether what `user` proved who they are with still holds: their token is not revoked (a bearer or
        ?token= token, or the one a session cookie was traded for). Read through the same caches as a request's
        check, so a revoke shows within _TOKEN_CACHE_S."""
        proof = user.proof
        if not isinstance(proof, tuple) or not proof:
            return True  # nothing to check again: auth mode none, or a proxy's header (checked by the proxy)
        if proof[0] == "token":
            return await self._user_for_digest(proof[1]) is not None
        if proof[0] == "session":
            return await self._admin_of(proof[1], proof[2]) is not None
        return True

    def client_address(self, headers: Mapping[str, str], client_host: str | None) -> str:
        """Whom failures are counted against: the TCP peer, or behind a trusted proxy the address it forwards."""
        return public_view(headers, client_host, self.settings.trusted_proxies).client or "unknown"

    def retry_after_s(self, headers: Mapping[str, str], client_host: str | None) -> float:
        """How long this client is refused token checks for (too many failures); 0: not refused."""
        if self.settings.auth_mode != "token":
            return 0.0
        return self.failures.retry_after_s(self.client_address(headers, client_host), time.monotonic())

    async def check_token(self, token: str, client: str) -> User | None:
        """The token's user, counting a failure against `client`; None also while the client is refused (no
        lookup at all then: a guess made during the wait tells nothing, not even when it is right)."""
        if self.failures.retry_after_s(client, time.monotonic()) > 0:
            return None
        user = await self.user_for_token(token)
        if user is None:
            self.failures.failed(client, time.monotonic())
        return user

    async def resolve(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        *,
        client_host: str | None,
        query_token: str | None = None,
    ) -> User | None:
        """The user behind a request, or None when it carries no valid identity for the auth mode."""
        settings = self.settings
        if settings.auth_mode == "none":
            return User(settings.local_user, admin=True)
        if settings.auth_mode == "header":
            name = headers.get(settings.user_header.lower())
            if not name or not address_trusted(client_host, settings.trusted_proxies):  # the TCP peer, never forwarded
                return None
            try:
                check_user_name(name)  # it becomes a folder name: users/<name>
            except ValueError:
                return None
            return User(name, admin=name in settings.admin_users)
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            return await self.check_token(authorization[7:].strip(), self.client_address(headers, client_host))
        if query_token:
            return await self.check_token(query_token, self.client_address(headers, client_host))
        cookie = cookies.get(SESSION_COOKIE)
        return await self.session_user(cookie) if cookie else None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_allowed(origin: str | None, host: str | None, settings: Settings, scheme: str | None = None) -> bool:
    """Browsers always send Origin on WebSocket and cross-site requests; tools that send none are not browsers.

    Same host: the Origin's host and port are those of `host` (the public host[:port]); with `scheme` (known
    from a trusted proxy) the Origin's scheme must be it too. Without it the scheme is not compared: the service
    speaks plain HTTP, so a TLS proxy that is not in trusted_proxies would otherwise shut out every https page.
    """
    if origin is None:
        return True
    if "*" in settings.allowed_origins or origin in settings.allowed_origins:
        return True
    if settings.allowed_origins or not host:
        return False
    try:
        page = urlsplit(origin)
        target = urlsplit(f"//{host}")
        page_port, target_port = page.port, target.port
    except ValueError:
        return False
    if page.scheme not in _DEFAULT_PORTS or not page.hostname or (scheme is not None and page.scheme != scheme):
        return False
    default = _DEFAULT_PORTS[page.scheme]
    return page.hostname == target.hostname and (page_port or default) == (target_port or default)


def request_origin_allowed(headers: Mapping[str, str], peer_host: str | None, settings: Settings) -> bool:
    """The Origin check of a request or WebSocket handshake as the browser sees it: behind a trusted proxy
    (settings.trusted_proxies) against the forwarded public scheme and host, else against the Host header.
    `headers`: Starlette's or websockets' Headers, or a dict with lower-case names; `peer_host`: the TCP peer's
    address (the socket's, not a value a proxy-headers middleware put in the ASGI scope)."""
    origins = header_lines(headers, "origin")
    if len(origins) > 1:
        return False  # a browser sends one; two is a forgery, whichever a check would read
    view = public_view(headers, peer_host, settings.trusted_proxies)
    return origin_allowed(origins[0] if origins else None, view.host, settings, view.scheme)
