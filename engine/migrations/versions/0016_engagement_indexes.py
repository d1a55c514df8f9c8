"""Indexes for the engagement report: the emails that went out in a period, a period's clicks
and page visits, the forms that followed an email

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 06:20:00

outbox by sent_at, and by updated_at for the rows refused for good (never sent); a partial
index per kind of tracking event the report reads (clicks, page visits), holding on
PostgreSQL the columns it counts, which replaces 0014's (kind, at); form_submissions by the
email they followed (also what deleting a send looks up).
"""
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = '0016'
down_revision: str | Sequence[str] | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _partial(condition: str) -> dict:
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_sent_at', ['sent_at'], unique=False)
        batch_op.create_index('ix_outbox_unsent_updated_at', ['updated_at'], unique=False,
                              **_partial("sent_at IS NULL"))
    with op.batch_alter_table('tracking_events', schema=None) as batch_op:
        batch_op.drop_index('ix_tracking_events_kind_at')
        batch_op.create_index('ix_tracking_events_clicks', ['at'], unique=False,
                              postgresql_include=['outbox_id', 'link_index', 'bot', 'lead_id',
                                                  'url'], **_partial("kind = 'click'"))
        batch_op.create_index('ix_tracking_events_page_views', ['at'], unique=False,
                              postgresql_include=['url', 'lead_id', 'bot'],
                              **_partial("kind = 'page_view'"))
    with op.batch_alter_table('form_submissions', schema=None) as batch_op:
        batch_op.create_index('ix_form_submissions_outbox_id', ['outbox_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('form_submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_form_submissions_outbox_id')
    with op.batch_alter_table('tracking_events', schema=None) as batch_op:
        batch_op.drop_index('ix_tracking_events_page_views')
        batch_op.drop_index('ix_tracking_events_clicks')
        batch_op.create_index('ix_tracking_events_kind_at', ['kind', 'at'], unique=False)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_unsent_updated_at')
        batch_op.drop_index('ix_outbox_sent_at')
