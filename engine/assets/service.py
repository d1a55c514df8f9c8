"""Store uploads as immutable asset versions, compiled once at upload.

Every upload of new content is a new AssetVersion with its SHA-256 hash; content equal to the
current version stores nothing. Emails and pages are compiled here (engine/render/compile.py);
a version that does not compile is stored with status "invalid" and its errors, and does not
become the asset's current version, so a broken upload never replaces working content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.assets.archive import (
    EXTENSIONS,
    Member,
    Problem,
    UploadLimits,
    UploadRefused,
    read_upload,
)
from engine.assets.models import Asset, AssetVersion
from engine.errors import Invalid, NotFound
from engine.programs.models import ProgramRecord
from engine.programs.store import current_program

VALID = "valid"
INVALID = "invalid"


@dataclass(frozen=True)
class StoredVersion:
    """What happened to one file of an upload."""

    path: str
    kind: str
    version: int
    status: str
    content_hash: str
    outcome: str  # created, unchanged, restored (content equal to an older version)
    errors: list = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "version": self.version,
                "status": self.status, "content_hash": self.content_hash,
                "outcome": self.outcome, "errors": self.errors}


@dataclass(frozen=True)
class UploadResult:
    program: str
    versions: list[StoredVersion]
    skipped: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # paths whose upload waits for a launch

    @property
    def invalid(self) -> list[StoredVersion]:
        return [v for v in self.versions if v.status == INVALID]

    @property
    def changed(self) -> bool:
        return any(v.outcome != "unchanged" for v in self.versions)

    @property
    def pending_launch(self) -> bool:
        """Leads keep the launched versions until `nurture launch` passes the gate for these."""
        return bool(self.pending)


def upload(*, session: Session, program: str, filename: str, data: bytes, now: datetime,
           actor: str = "cli", limits: UploadLimits | None = None) -> UploadResult:
    """Store an uploaded file (an asset, or a zip of a program directory) in the caller's
    transaction. Raises UploadRefused (nothing stored) when any file or member is refused."""
    record, spec = current_program(session=session, name=program)
    members, skipped = read_upload(filename, data, limits or UploadLimits.from_env())
    referenced = {e.file for e in spec.emails.values()} | {p.file for p in spec.pages.values()}
    unknown = [Problem(m.source, f"{m.path} is not an email or page of program {program} "
                                 "(add it to program.yaml and load the program first)")
               for m in members if m.kind != "image" and m.path not in referenced]
    if unknown:
        raise UploadRefused(unknown)
    versions = [store_member(session=session, program_id=record.id, member=m, now=now, actor=actor)
                for m in members]
    pending = []
    if record.live_version is not None:
        changed = [v.path for v in versions if v.outcome != "unchanged" and v.status == VALID]
        pending = [asset.path for asset in session.scalars(select(Asset).where(
            Asset.program_id == record.id, Asset.path.in_(changed)))
            if asset.current_version != asset.live_version]
    return UploadResult(program=record.name, versions=versions, skipped=skipped,
                        pending=pending)


def store_program_files(*, session: Session, program_id: int, files: dict[str, str],
                        now: datetime, actor: str) -> list[StoredVersion]:
    """Store the emails and pages of a loaded program directory (path -> text) as versions."""
    stored = []
    for path in sorted(files):
        suffix = "." + path.rpartition(".")[2].lower()
        if suffix not in EXTENSIONS:
            continue
        kind, media_type = EXTENSIONS[suffix]
        member = Member(path, kind, media_type, files[path].encode("utf-8"), path)
        stored.append(store_member(session=session, program_id=program_id, member=member,
                                   now=now, actor=actor))
    return stored


def store_member(*, session: Session, program_id: int, member: Member, now: datetime,
                 actor: str) -> StoredVersion:
    digest = hashlib.sha256(member.data).hexdigest()
    asset = session.scalar(select(Asset).where(Asset.program_id == program_id,
                                               Asset.path == member.path))
    if asset is None:
        asset = Asset(program_id=program_id, path=member.path, kind=member.kind, created_at=now)
        session.add(asset)
        session.flush()
    same = session.scalar(select(AssetVersion).where(AssetVersion.asset_id == asset.id,
                                                     AssetVersion.content_hash == digest))
    if same is not None:
        outcome = "unchanged"
        if same.status == VALID and asset.current_version != same.version:
            asset.current_version = same.version
            outcome = "restored"
        return _stored(asset, same, outcome, member.source)
    compiled_html = compiled_text = None
    errors: list[dict] = []
    if member.kind in ("email", "page"):
        from engine.render.compile import compile_asset

        compiled = compile_asset(member.kind, member.data.decode("utf-8"))
        compiled_html, compiled_text = compiled.html, compiled.text
        errors = [e.to_dict() for e in compiled.errors]
    latest = session.scalar(select(func.max(AssetVersion.version))
                            .where(AssetVersion.asset_id == asset.id)) or 0
    version = AssetVersion(
        asset_id=asset.id, version=latest + 1, content_hash=digest, content=member.data,
        size=len(member.data), media_type=member.media_type,
        status=INVALID if errors else VALID, errors=errors,
        compiled_html=compiled_html, compiled_text=compiled_text, actor=actor[:200],
        created_at=now,
    )
    session.add(version)
    if not errors:
        asset.current_version = version.version
    session.flush()
    return _stored(asset, version, "created", member.source)


def _stored(asset: Asset, version: AssetVersion, outcome: str, source: str) -> StoredVersion:
    return StoredVersion(path=asset.path, kind=asset.kind, version=version.version,
                         status=version.status, content_hash=version.content_hash,
                         outcome=outcome, errors=list(version.errors or []), source=source)


# -- reading ----------------------------------------------------------------------------------

def current_version(*, session: Session, program_id: int, path: str) -> AssetVersion:
    """The current (valid) version of a program's asset. Raises NotFound or Invalid (only
    invalid versions, listing the newest one's errors)."""
    asset = session.scalar(select(Asset).where(Asset.program_id == program_id,
                                               Asset.path == path))
    if asset is None:
        raise NotFound(f"no asset {path} (upload it with `nurture assets upload`)", field="asset")
    if asset.current_version is None:
        newest = session.scalar(select(AssetVersion).where(AssetVersion.asset_id == asset.id)
                                .order_by(AssetVersion.version.desc()).limit(1))
        errors = "; ".join(f"line {e['line']}: {e['message']}" for e in (newest.errors or []))
        raise Invalid(f"{path} has no valid version (version {newest.version}: {errors})",
                      field="asset", location=path)
    return session.scalar(select(AssetVersion).where(
        AssetVersion.asset_id == asset.id, AssetVersion.version == asset.current_version))


def current_versions(*, session: Session, program_id: int,
                     paths: list[str]) -> dict[str, AssetVersion | str]:
    """The current version of each path, or why it has none (the error's words)."""
    found: dict[str, AssetVersion | str] = {}
    for path in paths:
        try:
            found[path] = current_version(session=session, program_id=program_id, path=path)
        except (NotFound, Invalid) as exc:
            found[path] = exc.detail
    return found


def sendable_version(*, session: Session, program_id: int, path: str) -> AssetVersion:
    """The version of an asset that leads get: the one the program's last launch checked;
    before the program's first launch, the current one (previews; its sends wait for the
    launch). Raises NotFound for an asset added since the last launch (pending the next)."""
    if session.get(ProgramRecord, program_id).live_version is None:
        return current_version(session=session, program_id=program_id, path=path)
    asset = session.scalar(select(Asset).where(Asset.program_id == program_id,
                                               Asset.path == path))
    if asset is None or asset.live_version is None:
        raise NotFound(f"{path} has not been launched (`nurture launch` sends it once it passes "
                       "the QA gate)", field="asset")
    return session.scalar(select(AssetVersion).where(
        AssetVersion.asset_id == asset.id, AssetVersion.version == asset.live_version))


def list_assets(*, session: Session, program: str) -> list[tuple[Asset, AssetVersion | None]]:
    record = session.scalar(select(ProgramRecord).where(ProgramRecord.name == program))
    if record is None:
        raise NotFound(f"no program named {program!r}", field="program")
    assets = session.scalars(select(Asset).where(Asset.program_id == record.id)
                             .order_by(Asset.path))
    rows = []
    for asset in assets:
        newest = session.scalar(select(AssetVersion).where(AssetVersion.asset_id == asset.id)
                                .order_by(AssetVersion.version.desc()).limit(1))
        rows.append((asset, newest))
    return rows
