"""Alembic's environment for the registry: runs the revisions on the connection that
``modelcycle.registry.migration`` passes in, inside that connection's transaction, and records the revision
in the registry's own version table."""

from __future__ import annotations

from alembic import context

from modelcycle.registry.migration import VERSION_TABLE

context.configure(connection=context.config.attributes["connection"], version_table=VERSION_TABLE)
with context.begin_transaction():  # the caller's transaction is already open: this one only joins it
    context.run_migrations()
