"""enrollments: the persona matched, as a column

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 08:00:00

A copy of state's persona, written with the state (engine/journeys/service.py
enrollment_columns) and filled here: reports read the persona of every enrollment of a period,
and parsing each state cost more than the rest of the goal report.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0022'
down_revision: str | Sequence[str] | None = '0021'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('persona', sa.String(length=100), nullable=True))
    enrollments = sa.table('enrollments', sa.column('state', sa.JSON),
                           sa.column('persona', sa.String))
    op.get_bind().execute(sa.update(enrollments)
                          .values(persona=enrollments.c.state['persona'].as_string()))


def downgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_column('persona')
