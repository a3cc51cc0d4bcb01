"""job history rows in a table of their own (job_epochs), out of the jobs.history JSON column

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 17:00:00

Each recorded epoch used to rewrite the job's whole history (one JSON value): quadratic in the number of
epochs. Existing histories move over row by row; downgrade folds them back.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def _job_epochs() -> sa.Table:
    return sa.table('job_epochs', sa.column('job_id', sa.String), sa.column('epoch', sa.Integer),
                    sa.column('row', sa.JSON))


def _rows(value) -> list:
    if isinstance(value, str):       # a JSON column read back as text by some drivers
        value = json.loads(value)
    return value if isinstance(value, list) else []


def upgrade() -> None:
    op.create_table('job_epochs',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('row', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'epoch')
    )
    conn = op.get_bind()
    jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('history', sa.JSON))
    target = _job_epochs()
    for job_id, history in conn.execute(sa.select(jobs.c.id, jobs.c.history)).all():
        rows = {}
        for position, row in enumerate(_rows(history), 1):
            if isinstance(row, dict):
                epoch = int(row.get('epoch', position))
                rows[epoch] = {**row, 'epoch': epoch}      # a repeated epoch: the later row wins
        values = [{'job_id': job_id, 'epoch': e, 'row': r} for e, r in sorted(rows.items())]
        for i in range(0, len(values), BATCH):
            conn.execute(target.insert(), values[i:i + BATCH])
    # SQLite >= 3.35 drops a plain column in place (no table rebuild, which would cascade-delete the rows
    # that reference jobs); PostgreSQL always could.
    op.drop_column('jobs', 'history')


def downgrade() -> None:
    op.add_column('jobs', sa.Column('history', sa.JSON(), nullable=True))
    conn = op.get_bind()
    jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('history', sa.JSON))
    source = _job_epochs()
    histories: dict[str, list] = {}
    for job_id, row in conn.execute(sa.select(source.c.job_id, source.c.row).order_by(source.c.job_id,
                                                                                      source.c.epoch)):
        histories.setdefault(job_id, []).append(row)
    for job_id, in conn.execute(sa.select(jobs.c.id)).all():
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(history=histories.get(job_id, [])))
    op.drop_table('job_epochs')
