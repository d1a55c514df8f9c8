"""`nurture user create|passwd|list|disable`, with bad input named by its field."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from engine.auth.models import User

GOOD = "a long enough passphrase"


def users(db) -> list[User]:
    with db.session() as s:
        return list(s.scalars(select(User)))


def test_create_prompts_twice_hides_the_password_and_stores_only_its_argon2_hash(cli, db):
    result = cli("user", "create", "Ada@Example.com", "--role", "admin", "--name", "Ada",
                 input=f"{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert GOOD not in result.output
    [user] = users(db)
    assert (user.email, user.role, user.name) == ("ada@example.com", "admin", "Ada")
    assert user.password_hash.startswith("$argon2id$") and GOOD not in user.password_hash


def test_create_refuses_two_different_typings(cli, db):
    result = cli("user", "create", "ada@example.com", "--role", "admin",
                 input=f"{GOOD}\nsomething else entirely\n{GOOD}\n{GOOD}\n")
    assert "do not match" in result.output
    assert result.exit_code == 0 and len(users(db)) == 1


@pytest.mark.parametrize("args, password, message", [
    (["not-an-email", "--role", "admin"], GOOD, "email: 'not-an-email' is not an email"),
    (["ada@example.com", "--role", "boss"], GOOD, "role: unknown role 'boss'"),
    (["ada@example.com", "--role", "admin"], "short", "password: password must be at least 12"),
    (["ada@example.com", "--role", "admin"], "ada@example.com", "password: password is too easy"),
    (["ada@example.com", "--role", "admin"], "password1234", "password: password is too easy"),
    (["ada@example.com", "--role", "admin"], "aaaaaaaaaaaaaaaa", "password: password is too easy"),
    (["ada@example.com", "--role", "admin", "--name", "x" * 201], GOOD, "name: name is longer"),
    ([("x" * 190) + "@example.com", "--role", "admin"], GOOD, "email: email is longer than 190"),
])
def test_create_refuses_bad_input_naming_the_field(cli, db, args, password, message):
    result = cli("user", "create", *args, "--password-stdin", input=password + "\n")
    assert result.exit_code == 1
    assert message in result.output
    assert users(db) == []


def test_create_refuses_an_existing_email_and_accepts_read_only_spelled_with_a_hyphen(cli, db):
    ok = cli("user", "create", "ada@example.com", "--role", "read-only", "--password-stdin",
             input=GOOD + "\n")
    assert ok.exit_code == 0, ok.output
    again = cli("user", "create", "ADA@example.com", "--role", "admin", "--password-stdin",
                input=GOOD + "\n")
    assert again.exit_code == 1 and "email: a user ada@example.com already exists" in again.output
    assert [u.role for u in users(db)] == ["read_only"]


def test_passwd_changes_the_hash_and_the_session_generation(cli, db):
    cli("user", "create", "ada@example.com", "--role", "admin", "--password-stdin",
        input=GOOD + "\n")
    [before] = users(db)
    weak = cli("user", "passwd", "ada@example.com", "--password-stdin", input="short\n")
    assert weak.exit_code == 1 and "password: password must be at least 12" in weak.output
    unknown = cli("user", "passwd", "bob@example.com", "--password-stdin", input=GOOD + "\n")
    assert unknown.exit_code == 1 and "email: no user 'bob@example.com'" in unknown.output
    result = cli("user", "passwd", "ada@example.com", input="another fine passphrase\n" * 2)
    assert result.exit_code == 0, result.output
    [after] = users(db)
    assert after.password_hash != before.password_hash
    assert after.session_generation == before.session_generation + 1


def test_list_and_disable(cli, db):
    assert "no users" in cli("user", "list").output
    cli("user", "create", "ada@example.com", "--role", "sales", "--password-stdin",
        input=GOOD + "\n")
    assert cli("user", "disable", "ada@example.com").exit_code == 0
    again = cli("user", "disable", "ada@example.com")
    assert again.exit_code == 0 and "already disabled" in again.output
    missing = cli("user", "disable", "nobody@example.com")
    assert missing.exit_code == 1 and "email: no user" in missing.output
    [row] = json.loads(cli("user", "list", "--json").output)
    assert row["email"] == "ada@example.com" and row["role"] == "sales"
    assert row["disabled_at"] is not None and "password" not in json.dumps(row)
    assert "disabled" in cli("user", "list").output
