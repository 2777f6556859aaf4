"""Push transports: thin adapters (WebSocket, SSE) over one pure session protocol."""
