"""The push hub: named streams with offsets, epochs and bounded history, fanned out to bounded subscribers."""

from nbrelay.hub.hub import Hub, Resume, Subscription, open_hub

__all__ = ["Hub", "Resume", "Subscription", "open_hub"]
