"""The schema registries had before migrations: runs, metrics, models, versions, aliases and the events log,
append-only on SQLite by two triggers.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = ("UPDATE", "DELETE")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("config_hash", sa.String(64)),
        sa.Column("data_fingerprint", sa.String(64)),
        sa.Column("model_ref", sa.String(120)),
        sa.Column("error", sa.Text),
        sa.Column("started_at", sa.String(32), nullable=False),
        sa.Column("ended_at", sa.String(32)),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("next_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("name", sa.String(100), sa.ForeignKey("models.name"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("parent", sa.String(120)),
        sa.Column("run_id", sa.String(32)),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "aliases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(["name", "version"], ["versions.name", "versions.version"]),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False, index=True),
        sa.Column("version", sa.Integer),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("details", sa.Text, nullable=False),
    )
    if op.get_context().dialect.name == "sqlite":
        for verb in _SQLITE_TRIGGERS:
            op.execute(
                f"CREATE TRIGGER events_no_{verb} BEFORE {verb} ON events "
                "BEGIN SELECT RAISE(ABORT, 'the events table is append-only'); END"
            )


def downgrade() -> None:
    for table in ("events", "aliases", "versions", "models", "metrics", "runs"):
        op.drop_table(table)  # SQLite drops a table's triggers and indexes with it
