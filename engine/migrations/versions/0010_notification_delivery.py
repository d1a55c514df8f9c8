"""notification delivery: sales notifications are emailed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 22:30:00

Each sales notification now carries the state of its email (an outbox of its own, see
engine/sales/notify.py). Notifications recorded before this migration were never emailed and are
not emailed now (a late flood of old MQLs and escalations would help nobody): they are marked
skipped, saying why.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.db import UTCDateTime

revision: str = '0010'
down_revision: str | Sequence[str] | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = "recorded before sales notifications were emailed (migration 0010)"


def upgrade() -> None:
    with op.batch_alter_table('sales_notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=12), nullable=False,
                                      server_default='pending'))
        batch_op.add_column(sa.Column('recipient', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('retry_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('lease_until', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('sent_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.create_index('ix_sales_notifications_delivery', ['status', 'retry_at'],
                              unique=False)
    op.execute(sa.text("UPDATE sales_notifications SET status = 'skipped', last_error = :why")
               .bindparams(why=BEFORE))


def downgrade() -> None:
    with op.batch_alter_table('sales_notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_sales_notifications_delivery')
        for column in ('last_error', 'sent_at', 'lease_until', 'claimed_by', 'retry_at',
                       'attempts', 'recipient', 'status'):
            batch_op.drop_column(column)
