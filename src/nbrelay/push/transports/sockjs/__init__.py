"""SockJS (protocol 0.3.3) for pages that cannot keep a WebSocket: the legacy envelope and protocol v1, each at
its own base URL, over the same connection code as /websocket and /ws (docs/legacy.md, docs/protocol.md).

frames.py: framing and checks, no I/O · session.py: a SockJS session seen by the app as a WebSocket ·
receivers.py: frames out over HTTP or a WebSocket · routes.py: the URL scheme · headers.py, iframe.py.
"""

from __future__ import annotations

from starlette.applications import Starlette

from nbrelay.config import Settings
from nbrelay.push.transports.legacy import serve_legacy
from nbrelay.push.transports.sockjs.routes import SockJSEndpoint
from nbrelay.push.transports.ws import serve_websocket


def mount_sockjs(app: Starlette, settings: Settings) -> None:
    app.mount(settings.sockjs_legacy_path, SockJSEndpoint(serve_legacy, settings), name="sockjs-legacy")
    app.mount(settings.sockjs_v1_path, SockJSEndpoint(serve_websocket, settings), name="sockjs-v1")
