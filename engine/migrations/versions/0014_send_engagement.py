"""outbox: what each recipient did with the email; tracking_events by kind and time

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 05:00:00

`opened`, `clicked`, `bot_opens` and `bot_clicks` were kept on each send as its tracking events
were stored, for the engagement report; 0024 moved them to sent_emails and fills them there from
the events stored (this revision filled them here). tracking_events get an
index by (kind, at): a report reads the clicks or visits of a period.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | Sequence[str] | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('opened', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('clicked', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('bot_opens', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('bot_clicks', sa.Integer(), nullable=False,
                                      server_default='0'))
    with op.batch_alter_table('tracking_events', schema=None) as batch_op:
        batch_op.create_index('ix_tracking_events_kind_at', ['kind', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tracking_events', schema=None) as batch_op:
        batch_op.drop_index('ix_tracking_events_kind_at')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('bot_clicks')
        batch_op.drop_column('bot_opens')
        batch_op.drop_column('clicked')
        batch_op.drop_column('opened')
