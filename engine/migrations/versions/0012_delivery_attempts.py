"""outbox: real delivery attempts, deliveries, delivery unknown

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 23:40:00

`attempts` now counts SMTP attempts (it counted claims); `deliveries` counts the 250s a row got
(more than one: a duplicate, after a worker lost its claim mid-send); `delivery_unknown` marks a
row whose connection dropped after DATA was sent, or whose claim was taken over from a worker
that had started sending it, kept after a later success (`send_started` tells the latter).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | Sequence[str] | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deliveries', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('delivery_unknown', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('send_started', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.execute("UPDATE outbox SET deliveries = 1 WHERE status = 'sent'")


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('send_started')
        batch_op.drop_column('delivery_unknown')
        batch_op.drop_column('deliveries')
