"""What transports ask of the push side, and what the push side asks of a connection: the two protocols between
them. `nbrelay.push.Push` implements PushPort; transports depend on this module only, never on the service
above them, so the arrows between the two run one way."""

from __future__ import annotations

from typing import Any, Protocol

from nbrelay.auth import Authenticator
from nbrelay.config import Settings
from nbrelay.hub import Hub
from nbrelay.hub.hub import Subscriber
from nbrelay.jobs import User
from nbrelay.metrics import Metrics
from nbrelay.models import Event
from nbrelay.push.transports.session import Close, Send, Session, Subscribe


class Connection(Protocol):
    """One open push connection, as the push side keeps track of it."""

    transport: str

    @property
    def session(self) -> Session | None:
        """Set before the connection is added (None only while it opens)."""

    def close_soon(self, close: Close) -> None: ...

    def tick(self, now: float) -> None:
        """Called every couple of seconds: liveness checks (and the heartbeat, where the connection sends it)."""


class PushPort(Protocol):
    settings: Settings
    hub: Hub
    auth: Authenticator
    metrics: Metrics

    def admit(self, user: User) -> Close | None:
        """None when `user` may open one more connection, else the close to answer with."""

    def add(self, connection: Connection) -> None: ...

    def remove(self, connection: Connection, code: int | None) -> None: ...

    async def may_follow(self, user: User, stream: str) -> bool: ...

    async def follow(self, session: Session, subscriber: Subscriber, action: Subscribe) -> list[Send | Event]:
        """A subscribe the session accepted: what to send for it, in order (the refusal, or the resume)."""

    async def resume(self, session: Session, stream: str, since: str) -> list[Send | Event]: ...

    async def default_positions(self, user: User) -> dict[str, str]: ...

    async def snapshot(self, user: User) -> list[dict[str, Any]]:
        """The user's unfinished jobs as the API shows them."""
