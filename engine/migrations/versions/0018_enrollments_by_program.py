"""enrollments by program and time

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 06:50:00

The goal report reads a program's enrollments of a period.
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0018'
down_revision: str | Sequence[str] | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.create_index('ix_enrollments_program_created', ['program_id', 'created_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrollments_program_created')
