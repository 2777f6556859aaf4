"""The push side: `Push` (service.py: job events into the hub, the open connections, what a session may see) and
its transports (transports/: WebSocket, SSE, SockJS, the legacy profile, over one pure session protocol).

Transports depend on `transports.port.PushPort`, the few things they ask of the push side, never on this
package's service: arrows run down only.
"""

from nbrelay.push.service import Push

__all__ = ["Push"]
