"""form_submissions: the source each carries (attribution's touches), by lead and time

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 06:40:00

A submission keeps the source it carries: posted (a hidden field), else its visit's by the
page's map (engine/pages/forms.py touch_source). Submissions stored before get what they
posted (their visit was not kept). The lead_id index becomes (lead_id, created_at):
attribution reads a lead's touches up to a moment.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.flows.forms import fill_touch_sources

revision: str = '0017'
down_revision: str | Sequence[str] | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOURCES = ('source_channel', 'source_offer', 'source_partner')


def upgrade() -> None:
    with op.batch_alter_table('form_submissions', schema=None) as batch_op:
        for name in SOURCES:
            batch_op.add_column(sa.Column(name, sa.String(length=200), nullable=True))
        batch_op.drop_index('ix_form_submissions_lead_id')
        batch_op.create_index('ix_form_submissions_lead_at', ['lead_id', 'created_at'],
                              unique=False)
    fill_touch_sources(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table('form_submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_form_submissions_lead_at')
        batch_op.create_index('ix_form_submissions_lead_id', ['lead_id'], unique=False)
        for name in reversed(SOURCES):
            batch_op.drop_column(name)
