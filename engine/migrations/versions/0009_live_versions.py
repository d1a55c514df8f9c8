"""live versions: what a launch let out

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 21:10:00

A launch now pins the program version and every asset version it checked: sends, pages and new
enrollments use those (`live_version`), while a newer load or upload waits for the next launch.
Programs launched before this migration are taken as launched at their current versions.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('live_version', sa.Integer(), nullable=True))
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('live_version', sa.Integer(), nullable=True))
    with op.batch_alter_table('launches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assets', sa.JSON(), nullable=True))
    # The version a recorded launch let out, else (launched by hand) the current one.
    op.get_bind().execute(sa.text(
        "UPDATE programs SET live_version = COALESCE((SELECT MAX(launches.version) FROM launches "
        "WHERE launches.program_id = programs.id AND launches.launched = :yes), current_version) "
        "WHERE launched_at IS NOT NULL"), {"yes": True})
    op.execute("UPDATE assets SET live_version = current_version WHERE program_id IN "
               "(SELECT id FROM programs WHERE launched_at IS NOT NULL)")


def downgrade() -> None:
    with op.batch_alter_table('launches', schema=None) as batch_op:
        batch_op.drop_column('assets')
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_column('live_version')
    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.drop_column('live_version')
