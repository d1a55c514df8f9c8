"""Embedded defaults work on a fresh machine; environment settings override them."""

from __future__ import annotations

import os
import stat

import pytest

from engine.config import Settings, demo_settings, redis_connection


def test_defaults_live_under_the_instance_directory(tmp_path):
    settings = Settings.from_env({"NURTURE_INSTANCE": str(tmp_path / "inst")})
    assert settings.database_url == f"sqlite:///{tmp_path / 'inst' / 'nurture.db'}"
    assert settings.redis_url is None
    key_file = tmp_path / "inst" / "secret_key"
    assert key_file.read_text() == settings.secret_key and len(settings.secret_key) >= 64
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = Settings.from_env({"NURTURE_INSTANCE": str(tmp_path / "inst")})
    assert again.secret_key == settings.secret_key


def test_environment_overrides_defaults(tmp_path):
    settings = Settings.from_env({
        "NURTURE_INSTANCE": str(tmp_path), "DATABASE_URL": "postgres://u@db.example/nurture",
        "REDIS_URL": "redis://127.0.0.1:6379/5", "SECRET_KEY": "s3cret",
    })
    assert settings.database_url == "postgresql+psycopg://u@db.example/nurture"
    assert settings.redis_url == "redis://127.0.0.1:6379/5"
    assert settings.secret_key == "s3cret"
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(("value", "hosts"), [
    (None, ()),
    ("", ()),
    ("staging.acme.internal", ("staging.acme.internal",)),
    (" staging.acme.internal , 10.20.0.0/16,,[::1]:8080, ", ("staging.acme.internal",
                                                            "10.20.0.0/16", "[::1]:8080")),
])
def test_qa_allow_hosts_is_a_comma_list(tmp_path, value, hosts):
    env = {"NURTURE_INSTANCE": str(tmp_path), "SECRET_KEY": "s"}
    if value is not None:
        env["NURTURE_QA_ALLOW_HOSTS"] = value
    assert Settings.from_env(env).qa_allow_hosts == hosts


def test_embedded_redis_starts_without_a_server(tmp_path):
    client = redis_connection(Settings.from_env({"NURTURE_INSTANCE": str(tmp_path)}))
    try:
        assert client.ping()
        client.set("nurture:test", "1")
        assert client.get("nurture:test") == b"1"
    finally:
        client.delete("nurture:test")


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="the shared Redis service is used on CI")
def test_redis_url_uses_the_real_server(tmp_path, ci_redis_url):
    client = redis_connection(Settings.from_env({"NURTURE_INSTANCE": str(tmp_path),
                                                 "REDIS_URL": ci_redis_url}))
    key = f"nurture:test:{os.getpid()}"
    try:
        client.set(key, "1")
        assert client.get(key) == b"1"
        assert "redis_version" in client.info("server")
    finally:
        client.delete(key)


def test_sales_email_is_read_trimmed(tmp_path):
    env = {"NURTURE_INSTANCE": str(tmp_path), "SECRET_KEY": "s"}
    assert Settings.from_env(env).sales_email is None
    assert Settings.from_env({**env, "NURTURE_SALES_EMAIL": "  "}).sales_email is None
    assert Settings.from_env({**env, "NURTURE_SALES_EMAIL": " sales@acme.example "}
                             ).sales_email == "sales@acme.example"


def test_the_demo_keeps_everything_under_its_own_directory(tmp_path, monkeypatch):
    for name, value in {"DATABASE_URL": "postgresql://u@db.example/prod",
                        "REDIS_URL": "redis://prod.example:6379/0",
                        "SMTP_URL": "smtp://mail.example:25", "SECRET_KEY": "production",
                        "NURTURE_INSTANCE": str(tmp_path / "instance"),
                        "NURTURE_SINK_DIR": str(tmp_path / "sink")}.items():
        monkeypatch.setenv(name, value)
    demo = tmp_path / "demo"
    settings = demo_settings(demo)
    assert settings.instance_path == demo
    assert settings.database_url == f"sqlite:///{demo / 'nurture.db'}"
    assert (settings.redis_url, settings.smtp_url) == (None, None)
    assert settings.secret_key == (demo / "secret_key").read_text()
    assert settings.sink_dir == demo / "sink"
    assert settings.sales_email == "sales@acme.example"
    assert not (tmp_path / "instance").exists()
