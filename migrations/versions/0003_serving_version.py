"""models.serving_version: the version a model serves when a request names none

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 05:00:00

NULL (every existing model) keeps the old behaviour: the latest version serves.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ADD COLUMN on both databases (no table rebuild on SQLite)
    op.add_column('models', sa.Column('serving_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('models', 'serving_version')
