"""Data migrations keep what users stored: a program launched before launches pinned versions
stays launched at the versions it was sending."""

from __future__ import annotations

from alembic import command as alembic_command
from sqlalchemy import create_engine, text

from engine.migrate import alembic_config, upgrade

NOW = "2026-11-02 08:00:00"


def test_programs_launched_before_0009_are_live_at_their_current_versions(tmp_path):
    url, engine = old_database(tmp_path, "0008")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO programs (id, name, current_version, launched_at, "
                          "created_at) VALUES (1, 'live', 3, :now, :now), "
                          "(2, 'draft', 1, NULL, :now), (3, 'relaunched', 4, :now, :now)"),
                     {"now": NOW})
        conn.execute(text("INSERT INTO launches (program_id, version, by, at, launched, summary) "
                          "VALUES (3, 2, 'm', :now, :yes, 'passed'), "
                          "(3, 3, 'm', :now, :no, 'blocked')"),
                     {"now": NOW, "yes": True, "no": False})
        conn.execute(text("INSERT INTO assets (id, program_id, path, kind, current_version, "
                          "created_at) VALUES (1, 1, 'emails/a.mjml', 'email', 2, :now), "
                          "(2, 2, 'emails/b.mjml', 'email', 1, :now)"), {"now": NOW})
    upgrade(url)
    with engine.connect() as conn:
        programs = dict(conn.execute(text("SELECT name, live_version FROM programs")).all())
        assets = dict(conn.execute(text("SELECT path, live_version FROM assets")).all())
    engine.dispose()
    # a program launched by hand is taken at its current version; one whose launches were
    # recorded, at the version its last successful launch let out (version 4 was never launched)
    assert programs == {"live": 3, "draft": None, "relaunched": 2}
    assert assets == {"emails/a.mjml": 2, "emails/b.mjml": None}


def test_notifications_recorded_before_0010_are_not_emailed_and_new_ones_are(tmp_path):
    url, engine = old_database(tmp_path, "0009")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO leads (id, email, stage, custom, created_at, updated_at, "
                          "fit_score, behaviour_score) VALUES "
                          "(1, 'ada@globex.example', 'mql', '{}', :now, :now, 0, 0)"),
                     {"now": NOW})
        conn.execute(text("INSERT INTO sales_notifications (lead_id, at, kind, reason) "
                          "VALUES (1, :now, 'mql', 'score 60')"), {"now": NOW})
    upgrade(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sales_notifications (lead_id, at, kind, reason) "
                          "VALUES (1, :now, 'escalation', 'unanswered')"), {"now": NOW})
        rows = conn.execute(text("SELECT kind, status, attempts, last_error FROM "
                                 "sales_notifications ORDER BY id")).all()
    engine.dispose()
    before = "recorded before sales notifications were emailed (migration 0010)"
    assert [tuple(row) for row in rows] == [("mql", "skipped", 0, before),
                                            ("escalation", "pending", 0, None)]


def test_stage_histories_recorded_before_0013_get_their_path_levels(tmp_path):
    url, engine = old_database(tmp_path, "0012")
    histories = {  # lead: its stages in time order (inserted out of order below)
        1: ["inquiry", "engaged", "mql", "recycled", "mql", "sal"],
        2: ["inquiry", "mql", "engaged", "mql", "sal"],  # skipped engaged, then went back
        3: ["mql", "sal"],  # created as an MQL: never on the path
    }
    with engine.begin() as conn:
        for lead in histories:
            conn.execute(text("INSERT INTO leads (id, email, stage, custom, created_at, "
                              "updated_at, fit_score, behaviour_score) VALUES "
                              "(:id, :email, 'inquiry', '{}', :now, :now, 0, 0)"),
                         {"id": lead, "email": f"l{lead}@globex.example", "now": NOW})
        for day in range(6, 0, -1):
            for lead, stages in histories.items():
                if day <= len(stages):
                    conn.execute(text(
                        "INSERT INTO stage_changes (lead_id, to_stage, at, reason, actor) "
                        "VALUES (:lead, :stage, :at, 'old', 'm')"),
                        {"lead": lead, "stage": stages[day - 1],
                         "at": f"2026-11-0{day} 08:00:00"})
    upgrade(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT lead_id, from_at, path_level FROM stage_changes "
                                 "ORDER BY lead_id, at")).all()
    engine.dispose()
    levels = {lead: [level for row_lead, _, level in rows if row_lead == lead]
              for lead in histories}
    assert levels == {1: [0, 1, 2, 2, 2, 3], 2: [0, 0, 1, 2, 3], 3: [-1, -1]}
    # each change knows when the lead entered the stage it left: its previous change
    since = {lead: [at and at[:10] for row_lead, at, _ in rows if row_lead == lead]
             for lead in histories}
    assert since[3] == [None, "2026-11-01"]
    assert since[1] == [None] + [f"2026-11-0{day}" for day in range(1, 6)]


def old_database(tmp_path, revision: str):
    """A SQLite database migrated up to `revision`: its URL and an engine on it."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, revision)
    return url, create_engine(url)


def enrolled_lead(conn, state: str = "{}") -> None:
    """Program 1, lead 1 and its enrollment 1 (enrollment `state`), as an old instance has."""
    conn.execute(text("INSERT INTO programs (id, name, current_version, created_at) "
                      "VALUES (1, 'p', 1, :now)"), {"now": NOW})
    conn.execute(text("INSERT INTO leads (id, email, stage, custom, created_at, updated_at, "
                      "fit_score, behaviour_score) VALUES "
                      "(1, 'ada@globex.example', 'inquiry', '{}', :now, :now, 0, 0)"),
                 {"now": NOW})
    conn.execute(text("INSERT INTO enrollments (id, lead_id, program_id, program_version, "
                      "status, track, state, created_at, updated_at) VALUES "
                      "(1, 1, 1, 1, 'active', 't', :state, :now, :now)"),
                 {"now": NOW, "state": state})


def test_sends_tracked_before_0014_get_their_engagement_figures(tmp_path):
    """Also: rebuilding the outbox table on SQLite (batch migrations) keeps the events' links
    to their sends (with foreign keys on, dropping the old table set them to NULL)."""
    url, engine = old_database(tmp_path, "0013")
    with engine.begin() as conn:
        enrolled_lead(conn)
        for send, step in ((1, "one"), (2, "two"), (3, "three")):
            conn.execute(text(
                "INSERT INTO outbox (id, enrollment_id, lead_id, program_id, program_version, "
                "step, status, due_at, attempts, message_id, created_at, updated_at) VALUES "
                "(:id, 1, 1, 1, 1, :step, 'sent', :now, 1, :step, :now, :now)"),
                {"id": send, "step": step, "now": NOW})
        events = [(1, "open", False), (1, "click", True), (1, "click", True),
                  (2, "open", True), (2, "view", True), (2, "click", False)]
        for number, (send, kind, bot) in enumerate(events):
            conn.execute(text("INSERT INTO tracking_events (event_key, kind, lead_id, "
                              "outbox_id, at, bot) VALUES (:key, :kind, 1, :send, :now, :bot)"),
                         {"key": str(number), "kind": kind, "send": send, "now": NOW,
                          "bot": bot})
    upgrade(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT outbox_id, opened, clicked, bot_opens, bot_clicks "
                                 "FROM sent_emails ORDER BY outbox_id")).all()
    engine.dispose()
    # 1: a person's open, two machine clicks; 2: machines opened it, a person clicked (an open
    # too); 3: nothing happened
    assert [tuple(row) for row in rows] == [(1, 1, 0, 0, 2), (2, 1, 1, 2, 0), (3, 0, 0, 0, 0)]


def test_sends_stored_before_0015_get_their_persona_and_the_responses_put_on_them(tmp_path):
    url, engine = old_database(tmp_path, "0014")
    day = "2026-11-0{} 08:00:00".format
    with engine.begin() as conn:
        enrolled_lead(conn, state='{"persona": "it_manager"}')
        for send, sent in ((1, 1), (2, 3), (3, 5), (4, None)):  # 4 is still waiting
            conn.execute(text(
                "INSERT INTO outbox (id, enrollment_id, lead_id, program_id, program_version, "
                "step, status, due_at, attempts, message_id, sent_at, created_at, updated_at) "
                "VALUES (:id, 1, 1, 1, 1, :step, :status, :now, 1, :mid, :sent, :now, :now)"),
                {"id": send, "step": f"s{send}", "mid": f"<m{send}@x>", "now": day(1),
                 "status": "sent" if sent else "pending", "sent": sent and day(sent)})
        log = [(2, "bounced", '{"detail": "hard"}'),  # after send 1
               (4, "unsubscribed", '{"detail": null}'),  # after send 2
               (6, "unsubscribed", '{"detail": "complaint"}'),  # after send 3
               (7, "bounced", '{"detail": "soft", "message_id": "<m1@x>"}')]  # names send 1
        for at, kind, detail in log:
            conn.execute(text("INSERT INTO lead_events (lead_id, at, category, kind, detail, "
                              "actor) VALUES (1, :at, 'event', :kind, :detail, 't')"),
                         {"at": day(at), "kind": kind, "detail": detail})
        for lead, at in ((1, 4), (None, 4), (1, 1)):  # the last: before any email went out
            conn.execute(text("INSERT INTO form_submissions (program_id, page, lead_id, email, "
                              "fields, created_at) VALUES (1, 'demo', :lead, 'a@b.c', '{}', "
                              ":at)"), {"lead": lead, "at": day(at) if at > 1 else "2026-10-31 08:00:00"})
    upgrade(url)
    with engine.connect() as conn:
        personas = conn.execute(text("SELECT persona FROM outbox ORDER BY id")).scalars().all()
        sends = conn.execute(text("SELECT outbox_id, persona, hard_bounced, unsubscribed, "
                                  "complained, soft_bounced FROM sent_emails "
                                  "ORDER BY outbox_id")).all()
        forms = conn.execute(text("SELECT outbox_id FROM form_submissions ORDER BY id")).all()
    engine.dispose()
    assert personas == ["it_manager"] * 4
    # 4, still waiting, did not go out
    assert [tuple(row) for row in sends] == [(1, "it_manager", 1, 0, 0, 1),
                                             (2, "it_manager", 0, 1, 0, 0),
                                             (3, "it_manager", 0, 0, 1, 0)]
    assert [row[0] for row in forms] == [2, None, None]


def test_forms_stored_before_0017_carry_the_source_they_posted(tmp_path):
    url, engine = old_database(tmp_path, "0016")
    posted = ['{"utm_medium": "cpc", "utm_campaign": "brand"}', '{"source_partner": " g2 "}',
              '{"message": "hello"}', '{"utm_medium": "a\\u001bb"}']
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO programs (id, name, current_version, created_at) "
                          "VALUES (1, 'p', 1, :now)"), {"now": NOW})
        for fields in posted:
            conn.execute(text("INSERT INTO form_submissions (program_id, page, email, fields, "
                              "created_at) VALUES (1, 'demo', 'a@b.c', :fields, :now)"),
                         {"fields": fields, "now": NOW})
    upgrade(url)
    with engine.connect() as conn:
        found = conn.execute(text("SELECT source_channel, source_offer, source_partner "
                                  "FROM form_submissions ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row) for row in found] == [("cpc", "brand", None), (None, None, "g2"),
                                             (None, None, None), (None, None, None)]


def test_leads_stored_before_0020_keep_their_first_enrollments_persona(tmp_path):
    url, engine = old_database(tmp_path, "0019")
    with engine.begin() as conn:
        enrolled_lead(conn, state='{"persona": "it_manager"}')
        conn.execute(text("INSERT INTO programs (id, name, current_version, created_at) "
                          "VALUES (2, 'q', 1, :now)"), {"now": NOW})
        conn.execute(text("INSERT INTO enrollments (id, lead_id, program_id, program_version, "
                          "status, track, state, created_at, updated_at) VALUES "
                          "(2, 1, 2, 1, 'active', 't', :state, :now, :now)"),
                     {"now": NOW, "state": '{"persona": "finance"}'})
        conn.execute(text("INSERT INTO leads (id, email, stage, custom, created_at, updated_at, "
                          "fit_score, behaviour_score) VALUES "
                          "(2, 'bo@initech.example', 'inquiry', '{}', :now, :now, 0, 0)"),
                     {"now": NOW})
    upgrade(url)
    with engine.connect() as conn:
        found = conn.execute(text("SELECT id, enrolled_persona FROM leads ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row) for row in found] == [(1, "it_manager"), (2, None)]


def test_stage_changes_recorded_before_0021_know_when_they_were_left(tmp_path):
    url, engine = old_database(tmp_path, "0020")
    # lead 1: inserted out of time order, two changes at the same instant (ordered by id)
    changes = [(1, 1, "mql", "2026-11-03 08:00:00"), (2, 1, "inquiry", "2026-11-01 08:00:00"),
               (3, 1, "engaged", "2026-11-02 08:00:00"), (4, 1, "sal", "2026-11-03 08:00:00"),
               (5, 2, "inquiry", "2026-11-01 09:00:00")]
    with engine.begin() as conn:
        for lead in (1, 2):
            conn.execute(text("INSERT INTO leads (id, email, stage, custom, created_at, "
                              "updated_at, fit_score, behaviour_score) VALUES "
                              "(:id, :email, 'inquiry', '{}', :now, :now, 0, 0)"),
                         {"id": lead, "email": f"{lead}@globex.example", "now": NOW})
        for change, lead, stage, at in changes:
            conn.execute(text("INSERT INTO stage_changes (id, lead_id, to_stage, at, reason, "
                              "actor) VALUES (:id, :lead, :stage, :at, 'test', 'test')"),
                         {"id": change, "lead": lead, "stage": stage, "at": at})
    upgrade(url)
    with engine.connect() as conn:
        left = dict(conn.execute(text("SELECT id, left_at FROM stage_changes")).all())
    engine.dispose()
    assert left == {2: "2026-11-02 08:00:00", 3: "2026-11-03 08:00:00",
                    1: "2026-11-03 08:00:00", 4: None, 5: None}


def test_enrollments_stored_before_0022_have_their_persona_as_a_column(tmp_path):
    url, engine = old_database(tmp_path, "0021")
    with engine.begin() as conn:
        enrolled_lead(conn, state='{"persona": "it_manager", "stage": "inquiry"}')
    upgrade(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT persona FROM enrollments")).scalar() == "it_manager"
    engine.dispose()


def test_crm_items_written_before_0023_wait_to_be_delivered_each_with_its_own_event_id(
        tmp_path):
    url, engine = old_database(tmp_path, "0022")
    with engine.begin() as conn:
        enrolled_lead(conn)
        for kind in ("stage_change", "buying_signal"):
            conn.execute(text("INSERT INTO crm_outbox (lead_id, kind, payload, status, "
                              "created_at) VALUES (1, :kind, '{}', 'pending', :now)"),
                         {"kind": kind, "now": NOW})
    upgrade(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, attempts, event_id, delivered_at, replays "
                                 "FROM crm_outbox ORDER BY id")).all()
    engine.dispose()
    assert [(r.status, r.attempts, r.delivered_at, r.replays) for r in rows] == [
        ("pending", 0, None, 0)] * 2
    assert len({r.event_id for r in rows}) == 2 and all(len(r.event_id) == 36 for r in rows)


def test_downgrading_0024_puts_the_sent_emails_figures_back_on_the_outbox(tmp_path):
    """And upgrading again counts them anew from the events and the log."""
    url, engine = old_database(tmp_path, "0023")
    with engine.begin() as conn:
        enrolled_lead(conn)
        for send, status in ((1, "sent"), (2, "pending")):
            conn.execute(text(
                "INSERT INTO outbox (id, enrollment_id, lead_id, program_id, program_version, "
                "step, status, due_at, attempts, message_id, sent_at, created_at, updated_at) "
                "VALUES (:id, 1, 1, 1, 1, :step, :status, :now, 1, :step, :sent, :now, :now)"),
                {"id": send, "step": f"s{send}", "status": status, "now": NOW,
                 "sent": NOW if status == "sent" else None})
        for number, (kind, bot) in enumerate([("click", False), ("open", True)]):
            conn.execute(text("INSERT INTO tracking_events (event_key, kind, lead_id, "
                              "outbox_id, at, bot) VALUES (:key, :kind, 1, 1, :now, :bot)"),
                         {"key": str(number), "kind": kind, "now": NOW, "bot": bot})
    upgrade(url)
    figures = "SELECT {id}, opened, clicked, bot_opens, bot_clicks FROM {table} ORDER BY 1"
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(text(figures.format(
            id="outbox_id", table="sent_emails")))] == [(1, 1, 1, 1, 0)]
    alembic_command.downgrade(alembic_config(url), "0023")
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
        assert "sent_emails" not in set(tables.scalars())
        assert [tuple(r) for r in conn.execute(text(figures.format(
            id="id", table="outbox")))] == [(1, 1, 1, 1, 0), (2, 0, 0, 0, 0)]
    upgrade(url)
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(text(figures.format(
            id="outbox_id", table="sent_emails")))] == [(1, 1, 1, 1, 0)]
    engine.dispose()
