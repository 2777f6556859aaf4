"""Alembic environment for the job store: migrates the connection SqlJobStore.start() hands over.

There is no alembic.ini; upgrades run in-process so the service and its schema cannot disagree.
"""

from alembic import context

from nbrelay.store.sql import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "nbrelay migrations run through SqlJobStore.start(), which passes a connection in "
        "Config.attributes['connection']; the alembic command line is not wired up"
    )

# The caller owns the transaction (and the lock that goes with it), so Alembic runs inside it.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
