"""stage_changes: the (lead_id, at) index holds the stage entered, on PostgreSQL

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 07:00:00

Velocity reads the first entry of a lead into a stage: with to_stage in the index, PostgreSQL
answers from the index alone instead of visiting the table per lead.
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0019'
down_revision: str | Sequence[str] | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite has no included columns: its index is unchanged
    op.drop_index('ix_stage_changes_lead_at', table_name='stage_changes')
    op.create_index('ix_stage_changes_lead_at', 'stage_changes', ['lead_id', 'at'],
                    postgresql_include=['to_stage'])


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_index('ix_stage_changes_lead_at', table_name='stage_changes')
    op.create_index('ix_stage_changes_lead_at', 'stage_changes', ['lead_id', 'at'])
