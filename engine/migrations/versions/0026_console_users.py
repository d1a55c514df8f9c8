"""console users (Argon2id password hashes, session generations) and failed sign-ins

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-05 12:15:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engine.db import UTCDateTime

revision: str = '0026'
down_revision: str | Sequence[str] | None = '0025'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=190), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=True),
        sa.Column('role', sa.String(length=20), nullable=False),
        sa.Column('password_hash', sa.String(length=200), nullable=False),
        sa.Column('session_generation', sa.Integer(), server_default='1', nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('last_sign_in_at', UTCDateTime(), nullable=True),
        sa.Column('disabled_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('email'))
    op.create_table(
        'sign_in_attempts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('ip', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_sign_in_attempts_email_at', 'sign_in_attempts', ['email', 'at'])
    op.create_index('ix_sign_in_attempts_ip_at', 'sign_in_attempts', ['ip', 'at'])


def downgrade() -> None:
    op.drop_index('ix_sign_in_attempts_ip_at', table_name='sign_in_attempts')
    op.drop_index('ix_sign_in_attempts_email_at', table_name='sign_in_attempts')
    op.drop_table('sign_in_attempts')
    op.drop_table('users')
