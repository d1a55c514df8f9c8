"""Data migrations keep what users stored: a program launched before launches pinned versions
stays launched at the versions it was sending."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from engine.migrate import upgrade

NOW = "2026-11-02 08:00:00"


def test_programs_launched_before_0009_are_live_at_their_current_versions(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0008")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO programs (id, name, current_version, launched_at, "
                          "created_at) VALUES (1, 'live', 3, :now, :now), "
                          "(2, 'draft', 1, NULL, :now)"), {"now": NOW})
        conn.execute(text("INSERT INTO assets (id, program_id, path, kind, current_version, "
                          "created_at) VALUES (1, 1, 'emails/a.mjml', 'email', 2, :now), "
                          "(2, 2, 'emails/b.mjml', 'email', 1, :now)"), {"now": NOW})
    upgrade(url)
    with engine.connect() as conn:
        programs = dict(conn.execute(text("SELECT name, live_version FROM programs")).all())
        assets = dict(conn.execute(text("SELECT path, live_version FROM assets")).all())
    engine.dispose()
    assert programs == {"live": 3, "draft": None}
    assert assets == {"emails/a.mjml": 2, "emails/b.mjml": None}
