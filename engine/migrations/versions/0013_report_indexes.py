"""stage_changes: when the stage left was entered, path level, time indexes for the reports

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 04:00:00

`from_at` is when the lead entered the stage a change leaves (its previous change's time) and
`path_level` its level on the success path after the change (the furthest stage it reached in
order, engine/leads/stages.py path_level_after), both filled here from each lead's history in
time order. Velocity and the funnel read them instead of replaying every lead's history. The
lead_id index becomes (lead_id, at), and `at` and (to_stage, at) get their own: reports read
a period, or the entries into one stage in a period.
lead_events get an index by (kind, lead_id, at): a report reads one kind of event (forms,
bounces...) for one lead or for all.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.db import UTCDateTime
from engine.leads.stages import NOT_ON_PATH, path_level_after

revision: str = '0013'
down_revision: str | Sequence[str] | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEADS = 10_000


def upgrade() -> None:
    with op.batch_alter_table('stage_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('from_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('path_level', sa.SmallInteger(), nullable=False,
                                      server_default=str(NOT_ON_PATH)))
        batch_op.drop_index('ix_stage_changes_lead_id')
        batch_op.create_index('ix_stage_changes_lead_at', ['lead_id', 'at'], unique=False)
        batch_op.create_index('ix_stage_changes_at', ['at'], unique=False)
        batch_op.create_index('ix_stage_changes_to_at', ['to_stage', 'at'], unique=False)
    with op.batch_alter_table('lead_events', schema=None) as batch_op:
        batch_op.create_index('ix_lead_events_kind_lead', ['kind', 'lead_id', 'at'],
                              unique=False)
    _fill_from_each_history()


def _fill_from_each_history() -> None:
    """Lead by lead, LEADS at a time, each history in time order."""
    bind = op.get_bind()
    read = sa.text("SELECT id, lead_id, to_stage, at FROM stage_changes "
                   "WHERE lead_id > :after AND lead_id <= :upto ORDER BY lead_id, at, id")
    update = sa.text("UPDATE stage_changes SET from_at = :from_at, path_level = :level "
                     "WHERE id = :id")
    last = bind.scalar(sa.text("SELECT max(lead_id) FROM stage_changes")) or 0
    for after in range(0, last, LEADS):
        lead, level, since, rows = None, NOT_ON_PATH, None, []
        for change_id, lead_id, to_stage, at in bind.execute(read, {"after": after,
                                                                    "upto": after + LEADS}):
            if lead_id != lead:
                lead, level, since = lead_id, NOT_ON_PATH, None
            level = path_level_after(level, to_stage)
            if since is not None or level != NOT_ON_PATH:
                rows.append({"id": change_id, "from_at": since, "level": level})
            since = at
        if rows:
            bind.execute(update, rows)


def downgrade() -> None:
    with op.batch_alter_table('lead_events', schema=None) as batch_op:
        batch_op.drop_index('ix_lead_events_kind_lead')
    with op.batch_alter_table('stage_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_stage_changes_to_at')
        batch_op.drop_index('ix_stage_changes_at')
        batch_op.drop_index('ix_stage_changes_lead_at')
        batch_op.create_index('ix_stage_changes_lead_id', ['lead_id'], unique=False)
        batch_op.drop_column('path_level')
        batch_op.drop_column('from_at')
