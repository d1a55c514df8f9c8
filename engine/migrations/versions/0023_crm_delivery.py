"""crm_outbox: delivery as a signed webhook (attempts, lease, errors, dead letters)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-08 08:00:00

The items were written and never read: every one is still pending, and is delivered once a
CRM webhook is configured. Each gets its event id (the Idempotency-Key it is sent with), and
`sent_at`, never set, becomes `delivered_at`.
"""
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.db import UTCDateTime

revision: str = '0023'
down_revision: str | Sequence[str] | None = '0022'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5_000


def upgrade() -> None:
    with op.batch_alter_table('crm_outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('next_attempt_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('lease_until', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('error_kind', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('dead_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('replays', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('skip_reason', sa.String(length=200), nullable=True))
        batch_op.alter_column('sent_at', new_column_name='delivered_at')
    _fill_event_ids(op.get_bind())
    with op.batch_alter_table('crm_outbox', schema=None) as batch_op:
        batch_op.alter_column('event_id', existing_type=sa.String(length=36), nullable=False)
        batch_op.create_unique_constraint('uq_crm_outbox_event_id', ['event_id'])
        # the lead's items in order (the claim's "nothing earlier undelivered"); it serves
        # lookups by lead too
        batch_op.drop_index('ix_crm_outbox_lead_id')
        batch_op.create_index('ix_crm_outbox_lead_order', ['lead_id', 'id'], unique=False)


def _fill_event_ids(connection) -> None:
    items = sa.table('crm_outbox', sa.column('id', sa.Integer),
                     sa.column('event_id', sa.String))
    last = 0
    while True:
        ids = connection.execute(sa.select(items.c.id).where(items.c.id > last)
                                 .order_by(items.c.id).limit(_BATCH)).scalars().all()
        if not ids:
            return
        last = ids[-1]
        connection.execute(sa.update(items).where(items.c.id == sa.bindparam('item_id'))
                           .values(event_id=sa.bindparam('new_id')),
                           [{'item_id': i, 'new_id': str(uuid.uuid4())} for i in ids])


def downgrade() -> None:
    with op.batch_alter_table('crm_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_crm_outbox_lead_order')
        batch_op.create_index('ix_crm_outbox_lead_id', ['lead_id'], unique=False)
        batch_op.drop_constraint('uq_crm_outbox_event_id', type_='unique')
        batch_op.alter_column('delivered_at', new_column_name='sent_at')
        for column in ('skip_reason', 'replays', 'dead_at', 'last_error', 'error_kind',
                       'lease_until', 'claimed_by', 'next_attempt_at', 'attempts', 'event_id'):
            batch_op.drop_column(column)
