"""datasets.profile: per-feature statistics and per-class counts, computed at upload

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 09:00:00

NULL for every dataset uploaded before: it shows no profile, and jobs on it get no warnings from one.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ADD COLUMN on both databases (no table rebuild on SQLite)
    op.add_column('datasets', sa.Column('profile', sa.JSON(), nullable=True))


def downgrade() -> None:
    # a plain DROP COLUMN (SQLite >= 3.35): a batch rebuild of datasets with foreign keys on would null the
    # dataset_id of every job and sweep (ON DELETE SET NULL) when the old table is dropped
    op.drop_column('datasets', 'profile')
