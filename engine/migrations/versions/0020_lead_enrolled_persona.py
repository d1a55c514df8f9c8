"""leads: the persona their first enrollment matched

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 07:30:00

Kept as enrollments are made and move (engine/journeys/service.py); filled here from each
lead's first enrollment. Reports split by persona read it instead of every enrollment.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0020'
down_revision: str | Sequence[str] | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEADS = sa.table('leads', sa.column('id', sa.Integer),
                 sa.column('enrolled_persona', sa.String))
ENROLLMENTS = sa.table('enrollments', sa.column('id', sa.Integer),
                       sa.column('lead_id', sa.Integer), sa.column('state', sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enrolled_persona', sa.String(length=100), nullable=True))
    first = (sa.select(ENROLLMENTS.c.state['persona'].as_string())
             .where(ENROLLMENTS.c.lead_id == LEADS.c.id)
             .order_by(ENROLLMENTS.c.id).limit(1).scalar_subquery())
    op.get_bind().execute(sa.update(LEADS).values(enrolled_persona=first))


def downgrade() -> None:
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_column('enrolled_persona')
