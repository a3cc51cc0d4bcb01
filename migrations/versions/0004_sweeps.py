"""hyperparameter sweeps: the sweeps table, and jobs.sweep_id / jobs.sweep_trial for their trials

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 09:00:00

Existing jobs are no sweep's trials: both new columns are NULL for them. On SQLite the jobs table is rebuilt (a
foreign key cannot be added in place) with foreign keys off, so that no job's history or checkpoints cascade away.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sweeps',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.String(length=36), nullable=False),
    sa.Column('model_id', sa.String(length=36), nullable=False),
    sa.Column('dataset_id', sa.String(length=36), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('grid', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('objective', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['owners.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_sweeps_created_at'), 'sweeps', ['created_at'], unique=False)
    op.create_index(op.f('ix_sweeps_dataset_id'), 'sweeps', ['dataset_id'], unique=False)
    op.create_index(op.f('ix_sweeps_model_id'), 'sweeps', ['model_id'], unique=False)
    op.create_index(op.f('ix_sweeps_owner_id'), 'sweeps', ['owner_id'], unique=False)

    if op.get_context().dialect.name == 'sqlite':
        # SQLite adds a foreign key only by rebuilding the table (and its reflection reads ON DELETE only from a
        # table-level FOREIGN KEY clause, so an inline REFERENCES on ADD COLUMN would not match the models)
        with _jobs_rebuilt_without_cascades() as batch_op:
            batch_op.add_column(sa.Column('sweep_id', sa.String(length=36), nullable=True))
            batch_op.add_column(sa.Column('sweep_trial', sa.Integer(), nullable=True))
            batch_op.create_foreign_key('fk_jobs_sweep_id_sweeps', 'sweeps', ['sweep_id'], ['id'],
                                        ondelete='SET NULL')
            batch_op.create_index(batch_op.f('ix_jobs_sweep_id'), ['sweep_id'], unique=False)
        return
    op.add_column('jobs', sa.Column('sweep_id', sa.String(length=36), nullable=True))
    op.add_column('jobs', sa.Column('sweep_trial', sa.Integer(), nullable=True))
    op.create_foreign_key('fk_jobs_sweep_id_sweeps', 'jobs', 'sweeps', ['sweep_id'], ['id'], ondelete='SET NULL')
    op.create_index(op.f('ix_jobs_sweep_id'), 'jobs', ['sweep_id'], unique=False)


def downgrade() -> None:
    if op.get_context().dialect.name == 'sqlite':
        with _jobs_rebuilt_without_cascades() as batch_op:
            batch_op.drop_index(batch_op.f('ix_jobs_sweep_id'))
            batch_op.drop_constraint('fk_jobs_sweep_id_sweeps', type_='foreignkey')
            batch_op.drop_column('sweep_trial')
            batch_op.drop_column('sweep_id')
    else:
        op.drop_index(op.f('ix_jobs_sweep_id'), table_name='jobs')
        op.drop_constraint('fk_jobs_sweep_id_sweeps', 'jobs', type_='foreignkey')
        op.drop_column('jobs', 'sweep_trial')
        op.drop_column('jobs', 'sweep_id')
    op.drop_index(op.f('ix_sweeps_owner_id'), table_name='sweeps')
    op.drop_index(op.f('ix_sweeps_model_id'), table_name='sweeps')
    op.drop_index(op.f('ix_sweeps_dataset_id'), table_name='sweeps')
    op.drop_index(op.f('ix_sweeps_created_at'), table_name='sweeps')
    op.drop_table('sweeps')


@contextmanager
def _jobs_rebuilt_without_cascades() -> Iterator[BatchOperations]:
    """A batch of changes to the jobs table that SQLite can only make by copying it into a new table and dropping
    the old one, done as SQLite documents it (https://sqlite.org/lang_altertable.html#otheralter): foreign keys
    off, one transaction, a foreign_key_check, foreign keys on. With them on, DROP TABLE jobs would delete every
    job row first, and its ON DELETE CASCADE every job's history (job_epochs) and checkpoints with it."""
    context = op.get_context()
    with context.autocommit_block():        # PRAGMA foreign_keys does nothing inside a transaction
        conn = op.get_bind()
        conn.exec_driver_sql('PRAGMA foreign_keys=OFF')
        try:
            if conn.exec_driver_sql('PRAGMA foreign_keys').scalar():
                raise RuntimeError('could not turn SQLite foreign keys off to rebuild the jobs table')
            conn.exec_driver_sql('BEGIN')
            try:
                with op.batch_alter_table('jobs', recreate='always') as batch_op:
                    yield batch_op
                broken = conn.exec_driver_sql('PRAGMA foreign_key_check').all()
                if broken:
                    raise RuntimeError(f'the rebuilt jobs table breaks foreign keys: {broken[:5]}')
            except BaseException:
                conn.exec_driver_sql('ROLLBACK')
                raise
            conn.exec_driver_sql('COMMIT')
        finally:
            conn.exec_driver_sql('PRAGMA foreign_keys=ON')
