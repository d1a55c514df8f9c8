"""sent_emails: the emails that went out and what happened to them, apart from the outbox

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05 09:40:00

The figures 0014 and 0015 kept on each outbox row (opens, clicks, machine events, responses)
move to a row per email that went out, written when it did (engine/sending/responses.py
record_out), with an index of the clicked ones. The outbox rows are wide (links, errors) and busy with claims: a report reading a
quarter's sends read 1.9 GB at a million leads. The figures are counted again here from the
stored events and log, by the rules that keep them; the outbox indexes 0016 added for the
report go with them.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.db import UTCDateTime
from engine.sending.responses import mark_all_responses, record_out
from engine.tracking.service import count_tracked_sends

revision: str = '0024'
down_revision: str | Sequence[str] | None = '0023'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTS = ('bot_opens', 'bot_clicks')
FLAGS = ('opened', 'clicked', 'unsubscribed', 'complained', 'hard_bounced', 'soft_bounced')


def _partial(condition: str) -> dict:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    # The outbox first: on SQLite it is rebuilt, which would take rows referring to it along.
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_unsent_updated_at')
        batch_op.drop_index('ix_outbox_sent_at')
        for column in (*FLAGS, *COUNTS):
            batch_op.drop_column(column)
    op.create_table(
        'sent_emails',
        sa.Column('outbox_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('lead_id', sa.Integer(), nullable=False),
        sa.Column('program_id', sa.Integer(), nullable=False),
        sa.Column('program_version', sa.Integer(), nullable=False),
        sa.Column('step', sa.String(length=100), nullable=False),
        sa.Column('asset_version_id', sa.Integer(), nullable=True),
        sa.Column('persona', sa.String(length=100), nullable=True),
        sa.Column('out_at', UTCDateTime(), nullable=False),
        *(sa.Column(flag, sa.Boolean(), server_default=sa.false(), nullable=False)
          for flag in FLAGS),
        *(sa.Column(count, sa.Integer(), server_default='0', nullable=False)
          for count in COUNTS),
        sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['program_id'], ['programs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('outbox_id'), postgresql_with={'fillfactor': 80})
    with op.batch_alter_table('sent_emails', schema=None) as batch_op:
        batch_op.create_index('ix_sent_emails_out_at', ['out_at'], unique=False)
        batch_op.create_index('ix_sent_emails_lead_out_at', ['lead_id', 'out_at'], unique=False)
        batch_op.create_index('ix_sent_emails_clicked', ['out_at'], unique=False,
                              postgresql_include=['outbox_id', 'program_id', 'step', 'lead_id'],
                              **_partial("clicked OR bot_clicks > 0"))
    bind = op.get_bind()
    record_out(bind)
    count_tracked_sends(bind)
    mark_all_responses(bind)
    if bind.dialect.name == 'postgresql':  # the updates above moved rows: back in time order,
        op.execute('CLUSTER sent_emails USING ix_sent_emails_out_at')  # as live rows stay


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        for flag in FLAGS:
            batch_op.add_column(sa.Column(flag, sa.Boolean(), nullable=False,
                                          server_default=sa.false()))
        for count in COUNTS:
            batch_op.add_column(sa.Column(count, sa.Integer(), nullable=False,
                                          server_default='0'))
        batch_op.create_index('ix_outbox_sent_at', ['sent_at'], unique=False)
        batch_op.create_index('ix_outbox_unsent_updated_at', ['updated_at'], unique=False,
                              **_partial("sent_at IS NULL"))
    outbox = sa.table('outbox', sa.column('id', sa.Integer),
                      *(sa.column(name) for name in (*FLAGS, *COUNTS)))
    sent = sa.table('sent_emails', sa.column('outbox_id', sa.Integer),
                    *(sa.column(name) for name in (*FLAGS, *COUNTS)))
    kept = sa.select(sent.c.outbox_id)
    op.get_bind().execute(sa.update(outbox).where(outbox.c.id.in_(kept)).values({
        name: sa.select(sent.c[name]).where(sent.c.outbox_id == outbox.c.id).scalar_subquery()
        for name in (*FLAGS, *COUNTS)}))
    op.drop_table('sent_emails')
