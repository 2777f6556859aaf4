"""Hub backends, picked by URL scheme: memory:// (one process) — each backend one small file."""
