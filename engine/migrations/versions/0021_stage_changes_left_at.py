"""stage_changes: when the lead left the stage each change entered

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 07:45:00

`left_at` is the time of the lead's next change (by time, then id), None for its latest: set
as each change is recorded (engine/leads/service.py record_stage_change), filled here. With
an index of the stays left after an instant and one of the current stays, the funnel counts
the leads in each stage at an instant without reading every change before it.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.db import UTCDateTime

revision: str = '0021'
down_revision: str | Sequence[str] | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT = "left_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table('stage_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('left_at', UTCDateTime(), nullable=True))
    changes = sa.table('stage_changes', sa.column('id', sa.Integer),
                       sa.column('lead_id', sa.Integer), sa.column('at', UTCDateTime()),
                       sa.column('left_at', UTCDateTime()))
    following = changes.alias('following')
    next_at = (sa.select(following.c.at)
               .where(following.c.lead_id == changes.c.lead_id,
                      sa.or_(following.c.at > changes.c.at,
                             sa.and_(following.c.at == changes.c.at,
                                     following.c.id > changes.c.id)))
               .order_by(following.c.at, following.c.id).limit(1).scalar_subquery())
    op.get_bind().execute(sa.update(changes).values(left_at=next_at))
    with op.batch_alter_table('stage_changes', schema=None) as batch_op:
        batch_op.create_index('ix_stage_changes_left_at', ['left_at'], unique=False,
                              postgresql_include=['at', 'to_stage', 'lead_id'])
        batch_op.create_index('ix_stage_changes_current', ['at'], unique=False,
                              sqlite_where=sa.text(CURRENT), postgresql_where=sa.text(CURRENT),
                              postgresql_include=['to_stage', 'lead_id'])


def downgrade() -> None:
    with op.batch_alter_table('stage_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_stage_changes_current')
        batch_op.drop_index('ix_stage_changes_left_at')
        batch_op.drop_column('left_at')
