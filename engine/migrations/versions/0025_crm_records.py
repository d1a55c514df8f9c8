"""accounts, opportunities with their contacts and history, the CRM's ids on leads, and the
log of events the CRM sent

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05 12:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.db import UTCDateTime

revision: str = '0025'
down_revision: str | Sequence[str] | None = '0024'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'accounts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('crm_id', sa.String(length=100), nullable=True),
        sa.Column('domain', sa.String(length=253), nullable=True),
        sa.Column('name', sa.String(length=300), nullable=True),
        sa.Column('industry', sa.String(length=200), nullable=True),
        sa.Column('employees', sa.Integer(), nullable=True),
        sa.Column('country', sa.String(length=100), nullable=True),
        sa.Column('owner', sa.String(length=200), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.Column('crm_updated_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('crm_id'),
        sa.UniqueConstraint('domain'))
    op.create_table(
        'opportunities',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('crm_id', sa.String(length=100), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=True),
        sa.Column('name', sa.String(length=300), nullable=True),
        sa.Column('amount', sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('stage', sa.String(length=100), nullable=True),
        sa.Column('close_date', sa.Date(), nullable=True),
        sa.Column('owner', sa.String(length=200), nullable=True),
        sa.Column('status', sa.String(length=8), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.Column('crm_updated_at', UTCDateTime(), nullable=True),
        sa.Column('closed_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('crm_id'))
    op.create_index('ix_opportunities_account_id', 'opportunities', ['account_id'])
    op.create_table(
        'opportunity_contacts',
        sa.Column('opportunity_id', sa.Integer(), nullable=False),
        sa.Column('lead_id', sa.Integer(), nullable=False),
        sa.Column('role', sa.String(length=100), nullable=True),
        sa.Column('is_primary', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['opportunity_id'], ['opportunities.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('opportunity_id', 'lead_id'))
    op.create_index('ix_opportunity_contacts_lead_id', 'opportunity_contacts', ['lead_id'])
    op.create_table(
        'opportunity_changes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('opportunity_id', sa.Integer(), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('changes', sa.JSON(), nullable=False),
        sa.Column('actor', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['opportunity_id'], ['opportunities.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_opportunity_changes_opportunity', 'opportunity_changes',
                    ['opportunity_id', 'id'])
    op.create_table(
        'crm_inbound_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.String(length=200), nullable=False),
        sa.Column('type', sa.String(length=40), nullable=False),
        sa.Column('received_at', UTCDateTime(), nullable=False),
        sa.Column('occurred_at', UTCDateTime(), nullable=True),
        sa.Column('outcome', sa.String(length=12), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('event_id'))
    op.create_index('ix_crm_inbound_events_received', 'crm_inbound_events', ['received_at'])
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('crm_id', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('crm_object', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('crm_updated_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('crm_synced_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('account_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_leads_crm_id', ['crm_id'])
        batch_op.create_index('ix_leads_account_id', ['account_id'], unique=False)
        batch_op.create_foreign_key('fk_leads_account_id', 'accounts', ['account_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_constraint('fk_leads_account_id', type_='foreignkey')
        batch_op.drop_index('ix_leads_account_id')
        batch_op.drop_constraint('uq_leads_crm_id', type_='unique')
        for column in ('account_id', 'crm_synced_at', 'crm_updated_at', 'crm_object', 'crm_id'):
            batch_op.drop_column(column)
    op.drop_table('crm_inbound_events')
    op.drop_table('opportunity_changes')
    op.drop_table('opportunity_contacts')
    op.drop_table('opportunities')
    op.drop_table('accounts')
