"""`nurture apikey create|list|revoke` and key verification, as an admin uses them."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from engine.auth.models import ApiKey
from engine.auth.service import create_key, verify_key
from engine.db import utcnow
from engine.errors import Unauthorized

KEY = re.compile(r"^nur_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")


def create(cli, *args: str) -> str:
    result = cli("apikey", "create", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_create_prints_the_key_once_and_stores_only_its_hash(cli, db):
    result = cli("apikey", "create", "--role", "sales", "--name", "CRM sync")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    match = KEY.match(key)
    assert match, f"stdout should be the key alone, got {result.stdout!r}"
    assert "cannot be shown again" in result.stderr
    with db.session() as s:
        row = s.scalar(select(ApiKey))
        raw_rows = [tuple(r) for r in s.execute(text("SELECT * FROM api_keys"))]
    assert (row.name, row.role, row.prefix) == ("CRM sync", "sales", match.group(1))
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret = key.split("_", 2)[2]
    assert not any(secret in str(value) for r in raw_rows for value in r)


def test_keys_are_unique_and_name_defaults_to_role_and_prefix(cli, db):
    first, second = create(cli, "--role", "admin"), create(cli, "--role", "ADMIN")
    assert first != second
    with db.session() as s:
        rows = s.scalars(select(ApiKey).order_by(ApiKey.id)).all()
    assert [r.role for r in rows] == ["admin", "admin"]
    assert rows[0].name == f"admin-{rows[0].prefix}"


def test_unknown_role_is_a_clear_error(cli, db):
    result = cli("apikey", "create", "--role", "owner")
    assert result.exit_code == 1
    assert "'owner' is not one of" in result.stderr and "marketer" in result.stderr
    with db.session() as s:
        assert s.scalar(select(ApiKey)) is None


def test_overlong_name_is_refused(cli):
    result = cli("apikey", "create", "--role", "sales", "--name", "x" * 101)
    assert result.exit_code == 1
    assert "name: name longer than 100 characters" in result.stderr


def test_list_shows_keys_but_never_secrets(cli):
    sales = create(cli, "--role", "sales", "--name", "crm")
    reviewer = create(cli, "--role", "reviewer", "--name", "[bold]auditor")
    cli("apikey", "revoke", KEY.match(reviewer).group(1))
    table = cli("apikey", "list")
    assert table.exit_code == 0
    for key in (sales, reviewer):
        assert KEY.match(key).group(1) in table.output
        assert key.split("_", 2)[2] not in table.output
    assert "[bold]auditor" in table.output  # names are printed, not read as markup
    as_json = json.loads(cli("apikey", "list", "--json").stdout)
    assert [(k["name"], k["role"], k["revoked_at"] is not None) for k in as_json] == [
        ("crm", "sales", False), ("[bold]auditor", "reviewer", True)]
    assert set(as_json[0]) == {"prefix", "name", "role", "created_at", "last_used_at", "revoked_at"}


def test_list_without_keys_says_so(cli):
    result = cli("apikey", "list")
    assert result.exit_code == 0
    assert "no API keys" in result.output


def test_revoke_refuses_the_key_from_then_on(cli, db):
    key = create(cli, "--role", "marketer", "--name", "web form")
    prefix = KEY.match(key).group(1)
    with db.session() as s:
        assert verify_key(session=s, key=key, now=utcnow()).role == "marketer"
    result = cli("apikey", "revoke", prefix)
    assert result.exit_code == 0
    assert f"revoked key {prefix} (web form)" in result.output
    with db.session() as s, pytest.raises(Unauthorized, match="revoked"):
        verify_key(session=s, key=key, now=utcnow())
    again = cli("apikey", "revoke", f"nur_{prefix}")
    assert again.exit_code == 0 and "already revoked" in again.output


def test_revoke_of_unknown_prefix_is_an_error(cli):
    result = cli("apikey", "revoke", "deadbeef")
    assert result.exit_code == 1
    assert "no API key with prefix 'deadbeef'" in result.stderr


@pytest.mark.parametrize("presented", [
    None, "", "nur_", "Bearer x", "nur_1234_secret", "xyz_12345678_secret", "nur_12345678_",
    "nur_" + "a" * 300,
])
def test_malformed_or_missing_keys_are_refused(db, presented):
    with db.session() as s, pytest.raises(Unauthorized):
        verify_key(session=s, key=presented, now=utcnow())


def test_right_prefix_wrong_secret_is_refused(db):
    now = utcnow()
    with db.session() as s:
        _, key = create_key(session=s, role="admin", now=now)
    prefix = key.split("_")[1]
    with db.session() as s, pytest.raises(Unauthorized, match="invalid API key"):
        verify_key(session=s, key=f"nur_{prefix}_{'A' * 43}", now=now)


def test_verification_records_last_use_at_most_once_a_minute(db):
    start = utcnow()
    with db.session() as s:
        row, key = create_key(session=s, role="reviewer", name="dashboard", now=start)
    for offset in (0, 30, 90):
        with db.session() as s:
            principal = verify_key(session=s, key=key, now=start + timedelta(seconds=offset))
    assert (principal.name, principal.role, principal.actor) == ("dashboard", "reviewer",
                                                                 "api:dashboard")
    with db.session() as s:
        assert s.get(ApiKey, row.id).last_used_at == start + timedelta(seconds=90)
    with db.session() as s:
        verify_key(session=s, key=key, now=start + timedelta(seconds=100))
    with db.session() as s:
        assert s.get(ApiKey, row.id).last_used_at == start + timedelta(seconds=90)
