"""stage_changes: path level and time indexes for the reports

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 04:00:00

`path_level` is the lead's level on the success path after each change (the furthest stage it
reached in order, engine/leads/stages.py path_level_after), filled here from each lead's
history in time order. The funnel reads it instead of replaying every lead's history. The
lead_id index becomes (lead_id, at), and `at` gets one of its own: reports read a period.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.leads.stages import NOT_ON_PATH, path_level_after

revision: str = '0013'
down_revision: str | Sequence[str] | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEADS = 10_000


def upgrade() -> None:
    with op.batch_alter_table('stage_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('path_level', sa.SmallInteger(), nullable=False,
                                      server_default=str(NOT_ON_PATH)))
        batch_op.drop_index('ix_stage_changes_lead_id')
        batch_op.create_index('ix_stage_changes_lead_at', ['lead_id', 'at'], unique=False)
        batch_op.create_index('ix_stage_changes_at', ['at'], unique=False)
    _fill_path_levels()


def _fill_path_levels() -> None:
    """Lead by lead, LEADS at a time, each history in time order."""
    bind = op.get_bind()
    read = sa.text("SELECT id, lead_id, to_stage FROM stage_changes "
                   "WHERE lead_id > :after AND lead_id <= :upto ORDER BY lead_id, at, id")
    update = sa.text("UPDATE stage_changes SET path_level = :level WHERE id = :id")
    last = bind.scalar(sa.text("SELECT max(lead_id) FROM stage_changes")) or 0
    for after in range(0, last, LEADS):
        lead, level, levels = None, NOT_ON_PATH, []
        for change_id, lead_id, to_stage in bind.execute(read, {"after": after,
                                                                "upto": after + LEADS}):
            if lead_id != lead:
                lead, level = lead_id, NOT_ON_PATH
            level = path_level_after(level, to_stage)
            if level != NOT_ON_PATH:
                levels.append({"id": change_id, "level": level})
        if levels:
            bind.execute(update, levels)


def downgrade() -> None:
    with op.batch_alter_table('stage_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_stage_changes_at')
        batch_op.drop_index('ix_stage_changes_lead_at')
        batch_op.create_index('ix_stage_changes_lead_id', ['lead_id'], unique=False)
        batch_op.drop_column('path_level')
