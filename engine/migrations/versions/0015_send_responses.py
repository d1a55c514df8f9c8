"""outbox: the persona each email was chosen for, and the responses put on it; forms: their email

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 06:10:00

Each send keeps the persona it was chosen for and whether the lead unsubscribed, complained or
was reported bounced (hard, soft) after it; each form submission the email it followed. They
are kept as responses are recorded (engine/sending/responses.py). The persona is filled here
from the send's enrollment as it is now; the responses and the forms' emails by 0024, which
moved the responses to sent_emails (this revision filled them here, by the same rule).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.sending.outbox import fill_personas

revision: str = '0015'
down_revision: str | Sequence[str] | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FLAGS = ('unsubscribed', 'complained', 'hard_bounced', 'soft_bounced')


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('persona', sa.String(length=100), nullable=True))
        for flag in FLAGS:
            batch_op.add_column(sa.Column(flag, sa.Boolean(), nullable=False,
                                          server_default=sa.false()))
    with op.batch_alter_table('form_submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outbox_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('form_submissions_outbox_id_fkey', 'outbox',
                                    ['outbox_id'], ['id'], ondelete='SET NULL')
    fill_personas(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table('form_submissions', schema=None) as batch_op:
        batch_op.drop_constraint('form_submissions_outbox_id_fkey', type_='foreignkey')
        batch_op.drop_column('outbox_id')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        for flag in reversed(FLAGS):
            batch_op.drop_column(flag)
        batch_op.drop_column('persona')
