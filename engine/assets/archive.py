"""Reading uploads safely: upload limits (all in one place), file kinds, image checks and zips.

Nothing here touches the database. `read_upload` turns one uploaded file (a single asset or a
zip of a program directory) into checked members, or raises UploadRefused listing every
refused file or zip member with its reason.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from dataclasses import dataclass, fields
from io import BytesIO
from pathlib import PurePosixPath

from engine.errors import Invalid

MB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """Every upload limit. Override any of them with NURTURE_UPLOAD_<NAME> (bytes or counts)."""

    max_email_bytes: int = 2 * MB
    max_page_bytes: int = 2 * MB
    max_image_bytes: int = 5 * MB
    max_zip_bytes: int = 20 * MB  # the zip file itself
    max_unpacked_bytes: int = 50 * MB  # all members together, uncompressed
    max_members: int = 500
    max_ratio: int = 100  # uncompressed / compressed, per member
    max_path_chars: int = 300  # assets.path is a 300-character column

    @classmethod
    def from_env(cls, environ=None) -> UploadLimits:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(f"NURTURE_UPLOAD_{f.name.upper()}")
            if raw:
                values[f.name] = int(raw)
        return cls(**values)

    def max_bytes(self, kind: str) -> int:
        return {"email": self.max_email_bytes, "page": self.max_page_bytes,
                "image": self.max_image_bytes}[kind]


KIND_DIRS = {"email": "emails", "page": "pages", "image": "images"}
EXTENSIONS = {
    ".mjml": ("email", "text/mjml"),
    ".html": ("page", "text/html"),
    ".htm": ("page", "text/html"),
    ".png": ("image", "image/png"),
    ".jpg": ("image", "image/jpeg"),
    ".jpeg": ("image", "image/jpeg"),
    ".gif": ("image", "image/gif"),
    ".webp": ("image", "image/webp"),
}
# Loaded with `nurture program load` (program.yaml), read by `nurture qa` (scenarios) or kept
# with the program (its CRM field map, checked by `nurture program validate`), not here.
IGNORED_MEMBERS = frozenset({"program.yaml", "scenarios.yaml", "scenarios.csv", "crm.yaml"})


@dataclass(frozen=True)
class Problem:
    name: str  # the file, or "upload.zip:emails/x.mjml" for a zip member
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"

    def to_dict(self) -> dict:
        return {"file": self.name, "reason": self.reason}


class UploadRefused(Invalid):
    """One or more files were refused; nothing was stored."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        detail = "; ".join(str(p) for p in problems[:20])
        if len(problems) > 20:
            detail += f"; and {len(problems) - 20} more"
        super().__init__(f"upload refused, nothing stored: {detail}", field="file",
                         location=problems[0].name if problems else None)

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Member:
    path: str  # relative to the program directory: emails/welcome_it.mjml
    kind: str  # email, page, image
    media_type: str
    data: bytes
    source: str  # how errors name it: the file name, or zip:member


def classify(name: str) -> tuple[str, str]:
    """(kind, media type) from a file name. Raises ValueError with the reason."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".svg":
        raise ValueError("SVG images are refused (they can carry scripts): use PNG, JPEG, GIF "
                         "or WebP")
    if suffix not in EXTENSIONS:
        allowed = ", ".join(sorted(EXTENSIONS))
        raise ValueError(f"unknown file type {suffix or '(no extension)'!r} (allowed: {allowed}, "
                         "or a .zip of a program directory)")
    return EXTENSIONS[suffix]


# -- content checks ---------------------------------------------------------------------------

def image_type(data: bytes) -> tuple[str, int, int] | None:
    """(media type, width, height) from the file header, or None when it is no image we know."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "image/gif", width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return "image/webp", *_webp_size(data)
    if data[:3] == b"\xff\xd8\xff":
        size = _jpeg_size(data)
        if size:
            return "image/jpeg", *size
    return None


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return 0, 0


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments to the first start-of-frame marker."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


MAX_IMAGE_PIXELS = 40_000_000  # a decompression bomb in an email client is still a bomb


def check_content(kind: str, media_type: str, data: bytes, limits: UploadLimits) -> None:
    """Raise ValueError with the reason when the content does not fit its kind."""
    if not data:
        raise ValueError("the file is empty")
    if len(data) > limits.max_bytes(kind):
        raise ValueError(f"{len(data)} bytes is over the {kind} limit of "
                         f"{limits.max_bytes(kind)} bytes")
    if kind == "image":
        found = image_type(data)
        if found is None:
            raise ValueError(f"not a {media_type.split('/')[1].upper()} image (the content is "
                             "not a PNG, JPEG, GIF or WebP file)")
        if found[0] != media_type:
            raise ValueError(f"the extension says {media_type} but the content is {found[0]}")
        width, height = found[1], found[2]
        if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"bad image dimensions {width}x{height}")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if "\x00" in text:
        raise ValueError("the text contains NUL characters")


# -- single files and zips --------------------------------------------------------------------

def asset_path(filename: str, kind: str) -> str:
    """The program-relative path of a single uploaded file: its kind's folder and its name
    (welcome_it.mjml -> emails/welcome_it.mjml), wherever it was uploaded from."""
    posix = PurePosixPath(filename.replace("\\", "/"))
    return f"{KIND_DIRS[kind]}/{posix.name}"


def read_upload(filename: str, data: bytes, limits: UploadLimits) -> tuple[list[Member], list[str]]:
    """Checked members of an upload, and the names of skipped members (program.yaml).

    Raises UploadRefused listing every problem; nothing is half-accepted.
    """
    name = PurePosixPath(filename.replace("\\", "/")).name or "upload"
    if name.lower().endswith(".zip"):
        return read_zip(name, data, limits)
    try:
        kind, media_type = classify(name)
        check_content(kind, media_type, data, limits)
    except ValueError as exc:
        raise UploadRefused([Problem(name, str(exc))]) from None
    return [Member(asset_path(name, kind), kind, media_type, data, name)], []


def read_zip(name: str, data: bytes, limits: UploadLimits) -> tuple[list[Member], list[str]]:
    if len(data) > limits.max_zip_bytes:
        raise UploadRefused([Problem(name, f"{len(data)} bytes is over the zip limit of "
                                           f"{limits.max_zip_bytes} bytes")])
    try:
        archive = zipfile.ZipFile(BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise UploadRefused([Problem(name, f"not a valid zip file ({exc})")]) from None
    files = [info for info in infos if not info.is_dir()]
    if len(infos) > limits.max_members:
        raise UploadRefused([Problem(name, f"{len(infos)} members is over the limit of "
                                           f"{limits.max_members}")])
    declared = sum(info.file_size for info in files)
    if declared > limits.max_unpacked_bytes:
        raise UploadRefused([Problem(name, f"{declared} bytes unpacked is over the limit of "
                                           f"{limits.max_unpacked_bytes} bytes")])
    problems: list[Problem] = []
    for info in infos:
        reason = _unsafe_member(info, limits)
        if reason:
            problems.append(Problem(f"{name}:{info.filename}", reason))
    if problems:
        raise UploadRefused(problems)
    prefix = _common_root(files)
    members, skipped, seen = [], [], set()
    for info in files:
        relative = info.filename[len(prefix):]
        where = f"{name}:{info.filename}"
        if relative in IGNORED_MEMBERS:
            skipped.append(relative)
            continue
        try:
            kind, media_type = classify(relative)
            folder = relative.split("/", 1)[0] if "/" in relative else ""
            if folder != KIND_DIRS[kind] or relative.count("/") != 1:
                raise ValueError(f"a {kind} must be directly under {KIND_DIRS[kind]}/ in the "
                                 "program directory")
            if relative.lower() in seen:
                raise ValueError("appears twice in the zip")
            seen.add(relative.lower())
            content = _read_member(archive, info, limits.max_bytes(kind))
            check_content(kind, media_type, content, limits)
        except ValueError as exc:
            problems.append(Problem(where, str(exc)))
            continue
        members.append(Member(relative, kind, media_type, content, where))
    if problems:
        raise UploadRefused(problems)
    if not members:
        raise UploadRefused([Problem(name, "the zip holds no emails, pages or images")])
    return members, skipped


def _unsafe_member(info: zipfile.ZipInfo, limits: UploadLimits) -> str | None:
    raw = info.filename
    if "\x00" in raw or "\\" in raw:
        return "bad characters in the path"
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        return "absolute path refused"
    if ".." in PurePosixPath(raw).parts:
        return "path with '..' refused (it would escape the program directory)"
    if len(raw) > limits.max_path_chars:
        return f"path longer than {limits.max_path_chars} characters"
    kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type bits, when the tool set them
    if kind == stat.S_IFLNK:
        return "symbolic link refused"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "special file refused"
    if info.flag_bits & 0x1:
        return "encrypted member refused"
    if info.is_dir():
        return None
    if info.file_size > 0 and info.file_size > max(info.compress_size, 1) * limits.max_ratio:
        return (f"compression ratio {info.file_size // max(info.compress_size, 1)}:1 is over the "
                f"limit of {limits.max_ratio}:1 (zip bomb?)")
    return None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """Read at most `limit` bytes, whatever the header claims (headers can lie)."""
    with archive.open(info) as handle:
        content = handle.read(limit + 1)
    if len(content) > limit:
        raise ValueError(f"more than {limit} bytes unpacked")
    return content


def _common_root(files: list[zipfile.ZipInfo]) -> str:
    """`acme-nurture/` when every member sits in one top folder that is not emails/ etc."""
    tops = {info.filename.split("/", 1)[0] for info in files if "/" in info.filename}
    if len(tops) == 1 and all("/" in info.filename for info in files):
        top = tops.pop()
        if top not in KIND_DIRS.values():
            return top + "/"
    return ""
