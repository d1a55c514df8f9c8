"""Uploading assets: every type, versions and no-ops, compile errors, refused files and zips."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib

import pytest
from sqlalchemy import func, select

from engine.assets.archive import UploadLimits, UploadRefused
from engine.assets.models import Asset, AssetVersion
from engine.assets.service import upload
from engine.auth.service import ROLES, create_key
from engine.db import utcnow
from engine.web.app import create_app

WELCOME = "emails/welcome_it.mjml"


def png(width: int = 2, height: int = 1) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        b"\xff\xc0\x00\x11\x08\x00\x03\x00\x04\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9")
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"


def make_zip(members: dict[str, bytes], *, symlinks: tuple[str, ...] = (),
             compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compress) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compress
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


@pytest.fixture
def store(db, loaded_program):
    """store(filename, data) -> UploadResult, in its own transaction."""

    def do(filename: str, data: bytes, limits: UploadLimits | None = None):
        with db.session() as s:
            return upload(session=s, program=loaded_program, filename=filename, data=data,
                          now=utcnow(), actor="test", limits=limits)

    return do


def versions(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(AssetVersion))


def version_row(db, path: str, version: int) -> AssetVersion:
    with db.session() as s:
        return s.scalar(select(AssetVersion).join(Asset, Asset.id == AssetVersion.asset_id)
                        .where(Asset.path == path, AssetVersion.version == version))


def edited_welcome(sample_program, old: str, new: str) -> bytes:
    text = (sample_program / WELCOME).read_text()
    assert old in text
    return text.replace(old, new, 1).encode()


# -- each type ----------------------------------------------------------------------------------

def test_loading_a_program_stores_every_email_and_page_compiled(db, loaded_program):
    with db.session() as s:
        rows = s.execute(select(Asset.path, Asset.kind, Asset.current_version)).all()
    assert len([r for r in rows if r.kind == "email"]) == 15
    assert {r.path for r in rows if r.kind == "page"} == {"pages/pricing.html",
                                                         "pages/demo-request.html"}
    assert all(r.current_version == 1 for r in rows)


@pytest.mark.parametrize(("filename", "data", "path", "media_type"), [
    ("logo.png", png(), "images/logo.png", "image/png"),
    ("photo.jpg", JPEG, "images/photo.jpg", "image/jpeg"),
    ("spacer.gif", GIF, "images/spacer.gif", "image/gif"),
    ("hero.webp", WEBP, "images/hero.webp", "image/webp"),
])
def test_upload_each_image_type(store, db, filename, data, path, media_type):
    result = store(filename, data)
    [stored] = result.versions
    assert (stored.path, stored.kind, stored.version, stored.status) == (path, "image", 1, "valid")
    row = version_row(db, path, 1)
    assert row.media_type == media_type and row.content == data and len(row.content_hash) == 64


def test_upload_email_and_page_make_new_versions_when_changed(store, db, sample_program):
    before = versions(db)
    email = store("welcome_it.mjml", edited_welcome(sample_program, "Claire Martin", "Jo Smith"))
    page_text = (sample_program / "pages/pricing.html").read_text().replace("Starter", "Basic")
    page = store("pricing.html", page_text.encode())
    assert [(v.path, v.version, v.outcome) for v in email.versions + page.versions] == [
        (WELCOME, 2, "created"), ("pages/pricing.html", 2, "created")]
    assert versions(db) == before + 2
    assert "Jo Smith" in version_row(db, WELCOME, 2).compiled_html


def test_identical_upload_is_a_no_op(store, db, sample_program, cli):
    before = versions(db)
    [stored] = store("welcome_it.mjml", (sample_program / WELCOME).read_bytes()).versions
    assert (stored.outcome, stored.version) == ("unchanged", 1)
    assert versions(db) == before
    result = cli("assets", "upload", sample_program / WELCOME, "--program", "acme-nurture")
    assert result.exit_code == 0
    assert "unchanged (identical to version 1), nothing stored" in result.output
    assert versions(db) == before


def test_zip_of_a_program_directory(store, db, sample_program):
    members = {f"acme-nurture/{p.relative_to(sample_program)}": p.read_bytes()
               for p in sample_program.rglob("*") if p.is_file()}
    members["acme-nurture/emails/welcome_it.mjml"] = edited_welcome(sample_program, "Claire", "Sam")
    members["acme-nurture/images/logo.png"] = png()
    result = store("acme.zip", make_zip(members))
    outcomes = {v.path: v.outcome for v in result.versions}
    assert outcomes[WELCOME] == "created" and outcomes["images/logo.png"] == "created"
    assert sum(o == "unchanged" for o in outcomes.values()) == 16
    # read by program load, qa, and kept with the program (its CRM field map)
    assert sorted(result.skipped) == ["crm.yaml", "program.yaml", "scenarios.yaml"]


# -- compile once -------------------------------------------------------------------------------

def test_compiled_html_has_inlined_styles_and_intact_placeholders(db, loaded_program):
    row = version_row(db, WELCOME, 1)
    html = row.compiled_html
    assert "<mj-" not in html
    # the mj-style rule `a { color: #1d4ed8; }` is inlined onto the link
    assert 'href="{{ links.page(\'pricing\') }}" style="color:#1d4ed8"' in html
    assert "@media" in html  # responsive rules kept in a style block
    for placeholder in ("{{ links.unsubscribe }}", "{{ lead.first_name }}",
                        '{{ lead.company or "your team" }}', "{{ links.view_in_browser }}"):
        assert placeholder in html
    assert "%20" not in html


def test_text_part_has_links_as_text_and_url(db, loaded_program):
    text = version_row(db, WELCOME, 1).compiled_text
    assert "Unsubscribe ({{ links.unsubscribe }})" in text
    assert "Open the quick-start guide (https://acme.example/docs/quick-start)" in text
    assert "pricing page ({{ links.page('pricing') }})" in text
    assert "<" not in text.replace("<br", "")


@pytest.mark.parametrize(("old", "new", "line", "message"), [
    ("<mj-column>\n        <mj-text font-size=\"22px\"", "<mj-colum>\n        <mj-text font-size=\"22px\"",
     30, "unknown MJML tag <mj-colum>"),
    ("Welcome, {{ lead.first_name }}\n", "Welcome, {{ lead.first_name }\n", 32,
     "template syntax error"),
    ("Welcome, {{ lead.first_name }}\n", "Welcome, {{ customer.first_name }}\n", 32,
     "unknown variable 'customer'"),
])
def test_broken_email_is_stored_invalid_with_line_and_message(store, db, sample_program,
                                                              old, new, line, message):
    data = edited_welcome(sample_program, old, new)
    [stored] = store("welcome_it.mjml", data).versions
    assert (stored.status, stored.version) == ("invalid", 2)
    assert stored.errors[0]["line"] == line and message in stored.errors[0]["message"]
    row = version_row(db, WELCOME, 2)
    assert row.compiled_html is None and row.compiled_text is None  # never half-rendered
    with db.session() as s:  # version 1 stays current
        assert s.scalar(select(Asset.current_version).where(Asset.path == WELCOME)) == 1


def test_cli_reports_asset_line_message(cli, loaded_program, sample_program, tmp_path):
    path = tmp_path / "welcome_it.mjml"
    path.write_bytes(edited_welcome(sample_program, "{{ lead.first_name }}", "{{ lead.first_name"))
    result = cli("assets", "upload", path, "--program", loaded_program)
    assert result.exit_code == 1
    assert "emails/welcome_it.mjml: version 2 stored as INVALID" in result.output
    assert "emails/welcome_it.mjml:33: template syntax error" in result.output


# -- refused uploads: clear errors, nothing stored ----------------------------------------------

def _zip_with(sample_program, extra: dict[str, bytes], **kwargs) -> bytes:
    members = {"emails/welcome_it.mjml": edited_welcome(sample_program, "Claire", "Kim"),
               "images/ok.png": png(), **extra}
    return make_zip(members, **kwargs)


@pytest.mark.parametrize(("extra", "kwargs", "member", "reason"), [
    ({"../x.mjml": b"<mjml/>"}, {}, "../x.mjml", "'..'"),
    ({"emails/../../etc/x.mjml": b"x"}, {}, "emails/../../etc/x.mjml", "'..'"),
    ({"/etc/passwd.html": b"x"}, {}, "/etc/passwd.html", "absolute path"),
    ({"emails/link.mjml": b"/etc/passwd"}, {"symlinks": ("emails/link.mjml",)},
     "emails/link.mjml", "symbolic link"),
    ({"images/bomb.png": b"\0" * 2_000_000}, {}, "images/bomb.png", "compression ratio"),
    ({"images/x.png": b"not an image at all"}, {}, "images/x.png", "not a PNG image"),
    ({"images/logo.svg": b"<svg onload='alert(1)'/>"}, {}, "images/logo.svg", "SVG"),
    ({"run.sh": b"#!/bin/sh"}, {}, "run.sh", "unknown file type"),
    ({"images/fake.jpg": png()}, {}, "images/fake.jpg", "content is image/png"),
])
def test_refused_zip_member_stores_nothing(store, db, sample_program, extra, kwargs, member, reason):
    before = versions(db)
    with pytest.raises(UploadRefused) as refused:
        store("upload.zip", _zip_with(sample_program, extra, **kwargs))
    assert f"upload.zip:{member}" in str(refused.value)
    assert reason in str(refused.value)
    assert versions(db) == before  # all or nothing: the good members were not stored either


def test_too_many_members_and_too_large(store, db, sample_program):
    limits = UploadLimits(max_members=3, max_zip_bytes=50_000, max_image_bytes=1000)
    members = {f"images/{i}.png": png() for i in range(4)}
    with pytest.raises(UploadRefused, match="4 members is over the limit of 3"):
        store("many.zip", make_zip(members), limits)
    with pytest.raises(UploadRefused, match="over the zip limit of 50000"):
        store("big.zip", b"PK" + b"\0" * 60_000, limits)
    with pytest.raises(UploadRefused, match=r"huge.png: \d+ bytes is over the image limit of 1000"):
        store("huge.png", png() + b"\0" * 2000, limits)
    assert versions(db) == 17


@pytest.mark.parametrize(("filename", "data", "reason"), [
    ("logo.png", b"GIF89a" + b"\0" * 20, "extension says image/png but the content is image/gif"),
    ("logo.png", b"<html>hello</html>", "not a PNG image"),
    ("logo.svg", b"<svg/>", "SVG images are refused"),
    ("notes.txt", b"hi", "unknown file type '.txt'"),
    ("welcome_it.mjml", b"\xff\xfe<mjml>", "not UTF-8"),
    ("stranger.mjml", b"<mjml><mj-body></mj-body></mjml>", "not an email or page of program"),
])
def test_refused_single_files(store, db, filename, data, reason):
    before = versions(db)
    with pytest.raises(UploadRefused) as refused:
        store(filename, data)
    assert str(refused.value).startswith("upload refused, nothing stored: " + filename)
    assert reason in str(refused.value)
    assert versions(db) == before


def test_cli_refusal_names_the_member(cli, loaded_program, sample_program, tmp_path, db):
    path = tmp_path / "evil.zip"
    path.write_bytes(_zip_with(sample_program, {"../../x.html": b"x"}))
    result = cli("assets", "upload", path, "--program", loaded_program)
    assert result.exit_code == 1
    assert "evil.zip:../../x.html: path with '..' refused" in result.output
    assert versions(db) == 17


# -- API ----------------------------------------------------------------------------------------

@pytest.fixture
def api(env, db, loaded_program):
    app = create_app()
    with db.session() as s:
        keys = {role: create_key(session=s, role=role, now=utcnow())[1] for role in ROLES}
    client = app.test_client()

    def post(role: str | None, data=None, **kwargs):
        headers = {"Authorization": f"Bearer {keys[role]}"} if role else {}
        return client.post("/api/v1/assets", headers=headers, data=data, **kwargs)

    yield post
    app.extensions["nurture.db"].dispose()


def _form(name: str, data: bytes, program: str = "acme-nurture") -> dict:
    return {"program": program, "file": (io.BytesIO(data), name)}


@pytest.mark.parametrize(("role", "status"), [
    (None, 401), ("reviewer", 403), ("sales", 403), ("marketer", 201), ("admin", 201)])
def test_api_upload_roles(api, role, status):
    response = api(role, data=_form("logo.png", png()))
    assert response.status_code == status, response.get_json()
    if status == 201:
        [stored] = response.get_json()["versions"]
        assert stored["path"] == "images/logo.png" and stored["outcome"] == "created"


def test_api_upload_unchanged_invalid_and_refused(api, sample_program):
    same = api("marketer", data=_form("welcome_it.mjml", (sample_program / WELCOME).read_bytes()))
    assert same.status_code == 200 and same.get_json()["versions"][0]["outcome"] == "unchanged"

    broken = edited_welcome(sample_program, "{{ lead.first_name }}", "{{ lead.first_nam }")
    invalid = api("marketer", data=_form("welcome_it.mjml", broken))
    body = invalid.get_json()
    assert invalid.status_code == 422
    assert body["detail"].startswith("emails/welcome_it.mjml:32: template syntax error")
    assert body["versions"][0]["status"] == "invalid"

    refused = api("admin", data=_form("x.zip", make_zip({"../x.html": b"x"})))
    assert refused.status_code == 422
    assert "x.zip:../x.html" in refused.get_json()["detail"]


def test_api_malformed_multipart(api):
    assert api("admin", json={"program": "acme-nurture"}).status_code == 415
    missing_file = api("admin", data={"program": "acme-nurture"}, content_type="multipart/form-data")
    assert (missing_file.status_code, missing_file.get_json()["field"]) == (422, "file")
    missing_program = api("admin", data={"file": (io.BytesIO(png()), "logo.png")})
    assert (missing_program.status_code, missing_program.get_json()["field"]) == (422, "program")
    unknown = api("admin", data=_form("logo.png", png(), program="nope"))
    assert (unknown.status_code, unknown.get_json()["field"]) == (422, "program")
    garbage = api("admin", data=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n",
                  content_type="multipart/form-data; boundary=xyz")
    assert garbage.status_code in (400, 422) and "program" in garbage.get_json()["detail"]
    no_boundary = api("admin", data=b"abc", content_type="multipart/form-data")
    assert no_boundary.status_code in (400, 422)
    urlencoded = api("admin", data={"program": "acme-nurture"})
    assert urlencoded.status_code == 415

