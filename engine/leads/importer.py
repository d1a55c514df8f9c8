"""Streaming import of a leads CSV: constant memory, bulk writes per chunk, a rejects file.

Two entry points:

- `read_lead_rows(path, encoding)` parses and validates a file without a database (the simulator
  uses it). It yields one `LeadRow` per data row, good or bad.
- `import_leads(db=..., path=..., program=..., now=...)` upserts the rows into the database, enrolls
  the leads in a program and writes rejected rows to a rejects CSV.

Rows are numbered from 1 = the first row after the header (blank rows count but are skipped);
error messages, the rejects file and the simulator all use that number. A row is one line, or
several when a quoted value spans lines; every line ends up in exactly one row, even after a
stray quote (see LeadCsv._runaway_quote), so created + updated + unchanged + rejected = rows.

One email, one row: the first row of an email that imports wins, and a later row with the same
email is rejected as a duplicate naming that row (in the rejects file and the summary), rather
than merged over it unseen. This holds across chunks without reading the file twice: a chunk
committed is never undone by a row further down.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Self, TextIO

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from engine.crm.fieldmap import CrmMap, map_of
from engine.crm.models import CrmOutboxItem
from engine.crm.outbox import ITEM_COLUMNS, LEAD_CREATED, item_row, new_lead_payload
from engine.db import Database
from engine.errors import IllegalTransition, Invalid, NotFound
from engine.flows.leads import follow_through, reassess
from engine.journeys.decide import ActionKind, Decision, Event, EventKind, decide, new_state
from engine.journeys.models import Enrollment
from engine.journeys.service import action_rows, enrollment_columns, event_row
from engine.leads.fields import MisdecodedText, clean_lead_fields, normalise_email
from engine.leads.models import STANDARD_FIELDS, Lead, LeadEvent, StageChange, lead_fields
from engine.leads.service import change_fields, set_stage
from engine.leads.stages import NOT_ON_PATH, check_transition, path_level_after
from engine.programs.personas import PersonaResolver
from engine.programs.spec import Program
from engine.programs.store import running_program
from engine.scoring.rules import fit_awards, is_mql
from engine.sending.models import OutboxMessage
from engine.sending.outbox import outbox_rows

CHUNK_ROWS = 1000  # rows per transaction; also bounds the `email IN (...)` parameter count
# A physical line longer than this is rejected without being held in memory. No valid row comes
# near it (13 standard + 50 custom fields of at most 1,000 characters), and it stays below the
# csv module's field limit, so a giant field on one line is caught here, naming its column.
LINE_LIMIT = 100_000
# A quoted value may span lines (notes, addresses); a record that runs on for more lines than
# this, or more characters than LINE_LIMIT, is a quote left open, not a row.
MAX_ROW_LINES = 1000
WAL_PAGES_BEFORE_CHECKPOINT = 20_000  # SQLite, see _background_checkpoints (80 MB)
CHECKPOINT_INTERVAL = 0.02  # seconds
MAX_DUPLICATES_LISTED = 20  # in the summary; the rejects file has every one
DELIMITERS = (",", ";", "\t")
QUOTE = '"'
ACTOR = "import"
REASON = "imported"

_LEADS = Lead.__table__
_STORED = (_LEADS.c.id, *(_LEADS.c[name] for name in STANDARD_FIELDS), _LEADS.c.custom)
_NEW_LEAD = {**dict.fromkeys(STANDARD_FIELDS), "stage": "inquiry", "custom": {}}
_UPDATED = (*(name for name in STANDARD_FIELDS if name not in ("email", "stage")), "custom")


@dataclass(slots=True)
class LeadRow:
    """One data row: `fields` (clean_lead_fields output) when valid, else `error`."""

    number: int  # 1 = the first row after the header
    values: list[str]  # the cells as read, for the rejects file
    fields: dict | None = None
    error: Invalid | None = None  # error.field names the column ("" when the row as a whole)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A row rejected because an earlier row of the file, imported, has the same email."""

    email: str
    first_row: int  # the row imported
    row: int  # the row rejected


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0  # duplicates included
    rejects_path: Path | None = None  # set when a rejects file was written
    dry_run: bool = False
    duplicate_rows: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)  # the first MAX_DUPLICATES_LISTED

    @property
    def rows(self) -> int:
        return self.created + self.updated + self.unchanged + self.rejected

    def add_duplicate(self, email: str, first_row: int, row: int) -> None:
        self.duplicate_rows += 1
        if len(self.duplicates) < MAX_DUPLICATES_LISTED:
            self.duplicates.append(Duplicate(email, first_row, row))


def read_lead_rows(path: str | Path, encoding: str = "utf-8") -> Iterator[LeadRow]:
    """Yield every data row of a leads CSV as a LeadRow, in file order, validated.

    UTF-8 with or without BOM (or `encoding`), comma, semicolon or tab delimiter (taken from the
    header line), quoted fields with newlines. Header names are trimmed and case-insensitive; an
    `email` column is required. Raises Invalid for a file that cannot be read as a leads file at
    all (no email column, duplicate columns, empty file), NotFound for a missing file.
    """
    with LeadCsv(path, encoding) as source:
        yield from source


class LeadCsv:
    """An open leads CSV: `header` is read on opening, iterating yields LeadRows one at a time.
    Another kind of record file reads the same way with its own `key` column (required, named
    in lower case) and `clean` (a row's {column: value} to its fields, raising Invalid)."""

    def __init__(self, path: str | Path, encoding: str = "utf-8", *, key: str = "email",
                 clean: Callable[[dict], dict] = clean_lead_fields):
        self.path, self.key, self.clean = Path(path), key, clean
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise Invalid(f"unknown encoding {encoding!r}", field="encoding") from None
        try:
            self._raw = open(self.path, "rb")  # noqa: SIM115 - owned by this object, see close()
        except FileNotFoundError:
            raise NotFound(f"no such file: {self.path}", field="file") from None
        except IsADirectoryError:
            raise Invalid(f"{self.path} is a directory, not a CSV file", field="file") from None
        self.size = self.path.stat().st_size
        utf8 = codec == "utf-8"
        self.had_bom = utf8 and self._raw.peek(3)[:3] == codecs.BOM_UTF8
        # Bad bytes become lone surrogates, which clean_lead_fields rejects naming the column;
        # written back with the same error handler, they reach the rejects file unchanged.
        self.encoding = "utf-8-sig" if self.had_bom else "utf-8" if utf8 else encoding
        text = io.TextIOWrapper(self._raw, encoding=self.encoding, errors="surrogateescape",
                                newline="")
        try:
            self._open(text)
        except BaseException:
            self.close()
            raise

    def _open(self, text: TextIO) -> None:
        lines = self._lines = _Lines(text)
        first = next(lines, None)
        if first is None or not first.strip():
            raise Invalid("no header row: the file is empty or its first line is blank "
                          f"(expected column names, one of them {self.key})", field=self.key)
        if lines.overlong:
            raise Invalid(f"the header line is longer than {LINE_LIMIT} characters",
                          field=self.key)
        first = first.removeprefix("\ufeff")
        outside_quotes = first.split(QUOTE)[::2]
        self.delimiter = max(DELIMITERS, key=lambda d: sum(part.count(d) for part in outside_quotes))
        lines.delimiter = self.delimiter
        lines.read_again([first], after=0)
        self._reader = csv.reader(lines, delimiter=self.delimiter)
        lines.start_record()
        try:
            self.header = next(self._reader)
        except (csv.Error, _RecordTooLong):
            self.header = []
        if len(lines.record) > 1:
            raise Invalid("the header line opens a quote that it does not close", field=self.key)
        self.columns = [name.strip().lower() for name in self.header]
        seen: dict[str, int] = {}
        for index, name in enumerate(self.columns, start=1):
            if name and name in seen:
                raise Invalid(f"column {name!r} appears twice (columns {seen[name]} and {index})",
                              field=name)
            seen[name] = index
        if self.key not in seen:
            raise Invalid(f"no {self.key} column in the header (found: "
                          f"{', '.join(repr(n) for n in self.header) or 'nothing'})",
                          field=self.key)
        self._key_index = seen[self.key] - 1

    @property
    def bytes_read(self) -> int:
        return self.size if self._raw.closed else self._raw.tell()

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[LeadRow]:
        columns, lines, reader, width = self.columns, self._lines, self._reader, len(self.columns)
        number = 0
        while True:
            lines.start_record()
            failure = None
            try:
                values = next(reader)
            except StopIteration:
                return
            except _RecordTooLong:
                values, failure = [], (f"is still open after {MAX_ROW_LINES:,} lines or "
                                       f"{LINE_LIMIT:,} characters")
            except csv.Error as exc:
                values, failure = [], _csv_error(exc)
            number += 1
            if len(lines.record) > 1 or lines.hit_end:  # a quoted value spans lines, or is open
                failure = failure or self._runaway_quote(values)
                if failure:
                    yield self._unterminated(number, failure)
                    continue
            elif failure:
                yield LeadRow(number, [], error=Invalid(f"the row {failure}", field=""))
                continue
            if lines.overlong:
                rejected = self._overlong(number, values)
                if rejected:
                    yield rejected
                    continue
            try:
                if len(values) != width:
                    raise Invalid(f"{len(values)} values for {width} columns", field="")
                yield LeadRow(number, values, fields=self.clean(dict(zip(columns, values))))
            except Invalid as exc:
                if "".join(values).strip():  # a blank row carries nothing: skipped
                    yield LeadRow(number, values, error=exc)

    def _runaway_quote(self, values: list[str]) -> str | None:
        """Why a record read over several lines is not a row with a multi-line value but a quote
        left open, which swallowed the lines after it; None when it is a good row."""
        lines, width = self._lines, len(self.columns)
        if lines.hit_end:
            return "is still open at the end of the file"
        try:
            next(csv.reader(lines.record, delimiter=self.delimiter, strict=True))
        except csv.Error:  # a closing quote must end its value
            return f"is closed on line {lines.number} by a quote in the middle of a value"
        if len(values) != width:
            return f"runs to line {lines.number}, leaving {len(values)} values for {width} columns"
        for number, line in enumerate(lines.record[1:], start=lines.first + 1):
            if self._reads_as_row(line):
                return f"runs over line {number}, which reads as a row of its own"
        return None

    def _reads_as_row(self, line: str) -> bool:
        """A line with as many values as the header and a key in its column (for a leads
        file, an email address)."""
        values = next(csv.reader([line], delimiter=self.delimiter), [])
        if len(values) != len(self.columns):
            return False
        key = values[self._key_index]
        if self.key != "email":
            return bool(key.strip())
        try:
            normalise_email(key)
        except Invalid:
            return False
        return True

    def _unterminated(self, number: int, failure: str) -> LeadRow:
        """The first line of a record an open quote ran away with, rejected as a row of its own;
        the lines after it are read again, as rows."""
        lines = self._lines
        first = lines.first
        values = next(csv.reader(lines.record[:1], delimiter=self.delimiter), [])
        if values:  # the open value ran to the end of the line: not the line break
            values[-1] = values[-1].removesuffix("\n").removesuffix("\r")
        column = self.columns[len(values) - 1] if 0 < len(values) <= len(self.columns) else ""
        detail = (f"line {first}: unterminated quote: the quoted value that starts on this line "
                  f"{failure}; the lines after it are read as rows")
        lines.read_again(lines.record[1:], after=first)
        return LeadRow(number, values, error=Invalid(detail, field=column))

    def _overlong(self, number: int, values: list[str]) -> LeadRow | None:
        """The record just read rejected when one of its lines was overlong, else None."""
        lines = self._lines
        for line_number in range(lines.first, lines.number + 1):
            overlong = lines.overlong.get(line_number)
            if overlong:
                break
        else:
            return None
        column = ""
        if line_number == lines.first:  # the values before the cut are known
            before = overlong.before
            column = self.columns[len(before)] if len(before) < len(self.columns) else ""
            values = [*before, f"<{overlong.length - sum(map(len, before)):,} characters>"]
        detail = (f"value too large: the line is {overlong.length:,} characters long "
                  f"(limit {LINE_LIMIT:,})")
        return LeadRow(number, values, error=Invalid(detail, field=column))


def _csv_error(exc: csv.Error) -> str:
    return f"cannot be read as CSV ({exc})"  # not a value over the csv field limit: see _Lines


class _RecordTooLong(Exception):
    """Raised through csv.reader when a record runs on for more than MAX_ROW_LINES lines or
    LINE_LIMIT characters (below the csv module's field limit)."""


@dataclass(frozen=True, slots=True)
class _Overlong:
    """A line longer than LINE_LIMIT, replaced by a short one (see _Lines)."""

    length: int
    before: list[str]  # the complete values before the cut, read as if the line starts a record


class _Lines:
    """Physical lines for csv.reader, numbered (1 = the header), none longer than LINE_LIMIT.

    The lines of the record being read are kept (`record`), so that a record found to be a
    quote left open can be read again from its second line (`read_again`): no line is lost to a
    stray quote. The rest of a longer line is read in pieces and dropped (its record is then
    rejected, see `overlong`), so a hostile file never makes us hold a giant string; the line is
    replaced by one with the same quote parity, so that record boundaries stay where they were.
    """

    def __init__(self, handle: TextIO):
        self.handle = handle
        self.delimiter = ","
        self.number = 0  # of the line last handed out
        self.record: list[str] = []  # the lines handed out since start_record()
        self.held = 0  # their length in characters, once they are more than one
        self.hit_end = False  # the file ended inside the record: a quote left open
        self.overlong: dict[int, _Overlong] = {}  # by line number
        self._again: list[str] = []  # lines to hand out again, the next one last

    @property
    def first(self) -> int:
        """The number of the record's first line."""
        return self.number - len(self.record) + 1

    def start_record(self) -> None:
        self.record, self.held = [], 0

    def read_again(self, lines: list[str], *, after: int) -> None:
        """Hand out `lines` again, numbered from `after` + 1."""
        self._again.extend(reversed(lines))
        self.number = after
        self.hit_end = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._again:
            line = self._again.pop()
        else:
            line = self.handle.readline(LINE_LIMIT)
            if not line:
                self.hit_end = bool(self.record)
                raise StopIteration
            if len(line) == LINE_LIMIT and line[-1] not in "\r\n":
                line = self._drop_rest(line)
        self.number += 1
        record = self.record
        record.append(line)
        if len(record) > 1:  # a quoted value runs on: bound what is held
            self.held += len(line) if len(record) > 2 else len(record[0]) + len(line)
            if len(record) > MAX_ROW_LINES or self.held > LINE_LIMIT:
                raise _RecordTooLong
        return line

    def _drop_rest(self, head: str) -> str:
        length, quotes = len(head), head.count(QUOTE)
        while True:
            piece = self.handle.readline(LINE_LIMIT)
            length += len(piece)
            quotes += piece.count(QUOTE)
            if not piece or piece[-1] in "\r\n":
                break
        self.overlong[self.number + 1] = _Overlong(length, _fields_before_last(head, self.delimiter))
        return QUOTE * (quotes % 2) + "\n"


def _fields_before_last(head: str, delimiter: str) -> list[str]:
    """The complete fields at the start of a cut line (the last, unfinished one excluded)."""
    offset, cut = 0, -1
    for index, part in enumerate(head.split(QUOTE)):
        if index % 2 == 0 and delimiter in part:
            cut = offset + part.rindex(delimiter)
        offset += len(part) + 1
    if cut < 0:
        return []
    return next(csv.reader([head[:cut]], delimiter=delimiter), [])


# A spreadsheet runs a cell starting with one of these as a formula (OWASP's CSV injection list);
# ' itself is included so that the original is always the cell less one leading '.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_safe(cell: str) -> str:
    """`cell` with a leading ' when a spreadsheet would otherwise read it as a formula."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


class _Rejects:
    """The rejects CSV, created on the first rejected row: row,column,reason + original cells,
    each made spreadsheet-safe."""

    def __init__(self, path: Path, header: list[str], encoding: str):
        self.path, self.header, self.encoding = path, header, encoding
        self.count = 0
        self._handle: TextIO | None = None
        self._writer = None

    def add(self, row: LeadRow, error: Invalid) -> None:
        if self._writer is None:
            self._handle = open(self.path, "w", encoding=self.encoding,  # noqa: SIM115 - lazy
                                errors="surrogateescape", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["row", "column", "reason", *map(spreadsheet_safe, self.header)])
        cells = [error.field or "", _reason(error), *row.values]
        self._writer.writerow([row.number, *map(spreadsheet_safe, cells)])
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _reason(error: Invalid) -> str:
    """Why a row is rejected, with the --encoding advice a file alone may need."""
    if isinstance(error, MisdecodedText):
        return f"{error.detail} ({error.encoding_advice})"
    return error.detail


def default_rejects_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.rejects.csv")


def import_leads(*, db: Database, path: str | Path, program: str, now: datetime,
                 dry_run: bool = False, rejects_path: str | Path | None = None,
                 encoding: str = "utf-8",
                 progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Upsert every valid row of a leads CSV by email and enroll the leads in `program`.

    Streams the file in chunks of CHUNK_ROWS rows, one committed transaction per chunk (a crash
    loses at most the chunk in flight; a re-run completes it, as importing twice changes nothing).
    A blank cell never erases a stored value. A row whose email an earlier row of the file
    was imported for is rejected as a duplicate (`summary.duplicates`). Rejected rows go to
    `rejects_path` (default `<stem>.rejects.csv` beside the file, only created when a row is
    rejected) and never stop the others. `dry_run` runs the very same work in a single transaction that is rolled back, so its
    counts are exact and nothing is stored; on SQLite it holds the write lock meanwhile.
    `progress(bytes_read, total_bytes)` is called after each chunk.

    Raises NotFound (file, program) or Invalid (no email column, ...) before anything is written.
    """
    path = Path(path)
    rejects_path = Path(rejects_path) if rejects_path else default_rejects_path(path)
    if path.exists() and rejects_path.resolve() == path.resolve():
        raise Invalid("the rejects file must not be the file being imported", field="rejects")
    if not rejects_path.parent.is_dir():
        raise Invalid(f"no such directory for the rejects file: {rejects_path.parent}",
                      field="rejects")
    with db.session() as session:
        record, spec = running_program(session=session, name=program)
    crm_map = map_of(db.info)  # the field map in effect: an invalid one stops the import here
    summary = ImportSummary(dry_run=dry_run)
    with LeadCsv(path, encoding) as source:
        rejects = _Rejects(rejects_path, source.header, source.encoding)
        try:
            with (db.engine.connect() as conn, _closed_after(conn), _long_lived_objects_frozen(),
                  _background_checkpoints(conn)):
                writer = _ChunkWriter(conn, record.id, spec, now, summary, rejects, crm_map)
                if dry_run:
                    conn.begin()
                for chunk in _chunks(source, CHUNK_ROWS):
                    if dry_run:
                        writer.apply(chunk)
                    else:
                        with conn.begin():
                            writer.apply(chunk)
                    if progress:
                        progress(source.bytes_read, source.size)
                if dry_run:
                    conn.rollback()
        finally:
            rejects.close()
    summary.rejected = rejects.count
    summary.rejects_path = rejects_path if rejects.count else None
    return summary


@contextmanager
def _closed_after(conn: Connection) -> Iterator[None]:
    """Close the connection's database connection at the end rather than return it to the
    pool: its temporary table (_ImportedEmails) goes with it, even after a failure."""
    try:
        yield
    finally:
        conn.invalidate()


@contextmanager
def _long_lived_objects_frozen() -> Iterator[None]:
    """Keep the cyclic garbage collector off the objects that exist before the import.

    Each chunk allocates tens of thousands of short-lived dicts; they trigger full collections
    that rescan every long-lived object (modules, SQLAlchemy's, the program) although none of
    those can become garbage meanwhile: about a tenth of the import's time. Frozen, they are
    skipped; the chunk's own objects are still collected. Left alone when something else (a
    pre-forking server) froze objects already, as unfreezing would undo its freeze.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _background_checkpoints(conn: Connection) -> Iterator[None]:
    """On SQLite, copy the write-ahead log into the database file from a thread of its own.

    Every chunk commit appends about a thousand pages to the WAL; SQLite's automatic checkpoint
    then copies them into the database file and syncs it, inside a later commit, while the
    import waits. A passive checkpoint on another connection does the same meanwhile (sqlite3
    releases the GIL during it) and keeps the WAL short. The automatic checkpoint stays on, at a
    higher threshold, in case this thread falls behind or stops on an error.
    """
    url = conn.engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield
        return
    driver = conn.connection.driver_connection
    previous = driver.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    driver.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES_BEFORE_CHECKPOINT}")
    stop = threading.Event()

    def checkpoint() -> None:
        other = conn.engine.raw_connection()  # its own connection, in autocommit mode
        try:
            while not stop.wait(CHECKPOINT_INTERVAL):
                other.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # the automatic checkpoint takes over
        finally:
            other.close()

    thread = threading.Thread(target=checkpoint, name="leads-import-checkpoint", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        driver.execute(f"PRAGMA wal_autocheckpoint={previous}")


def _chunks(rows: Iterable[LeadRow], size: int) -> Iterator[list[LeadRow]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


class _BulkInsert:
    """An INSERT compiled once for the dialect and run with executemany straight on the driver.

    `conn.execute(insert(table), rows)` sends every value of every row through its column type
    (JSON encoding, datetime conversion), about as costly as everything else the import does.
    Here rows hold values already in driver form, converted with the same column types by
    `convert`, so that a value many rows share (now, the enrollment of one persona x stage x
    time zone) is converted once. Every column must be given: Python-side defaults do not apply.
    """

    def __init__(self, conn: Connection, table: Table, keys: Iterable[str]):
        dialect = conn.dialect
        keys = list(keys)
        compiled = insert(table).compile(dialect=dialect, column_keys=keys, for_executemany=True)
        if set(compiled.params) != set(keys):
            raise ValueError(f"{table.name}: give exactly {sorted(compiled.params)}")
        self.sql = str(compiled)
        self._order = itemgetter(*compiled.positiontup) if compiled.positional else None
        self._bind = {key: table.c[key].type.dialect_impl(dialect).bind_processor(dialect)
                      for key in keys}

    def convert(self, key: str, value):
        process = self._bind[key]
        return value if process is None or value is None else process(value)

    def convert_row(self, row: dict) -> dict:
        return {key: self.convert(key, value) for key, value in row.items()}

    def __call__(self, conn: Connection, rows: list[dict]) -> None:
        if rows:
            conn.exec_driver_sql(self.sql, list(map(self._order, rows)) if self._order else rows)


_LEAD_KEYS = (*STANDARD_FIELDS, "custom", "created_at", "updated_at", "fit_score", "behaviour_score")
_STAGE_KEYS = ("lead_id", "from_stage", "to_stage", "at", "reason", "actor", "from_at",
               "path_level")
_ENROLLMENT_KEYS = ("lead_id", "program_id", "created_at", "status", "track", "due_at", "state",
                    "persona", "program_version", "updated_at")
_EVENT_KEYS = ("lead_id", "program_id", "at", "category", "kind", "detail", "actor")


_OUTBOX_KEYS = ("enrollment_id", "lead_id", "program_id", "program_version", "step", "status",
                "due_at", "attempts", "deliveries", "delivery_unknown", "send_started",
                "persona", "created_at", "updated_at", "message_id")


class _ImportedEmails:
    """The email and row number of each row imported so far, in a temporary table of the
    import's connection (created in the first chunk's transaction): a later row with one of
    these emails is a duplicate. In the database rather than in memory, so that memory stays
    flat however long the file. The table lives as long as the connection, which import_leads
    closes afterwards instead of returning it to the pool."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.table = Table("import_emails", MetaData(), Column("email", String(254),
                                                                primary_key=True),
                           Column("row", Integer, nullable=False), prefixes=["TEMPORARY"])
        self._created = False

    def rows(self, emails: list[str]) -> dict[str, int]:
        """The row that imported each of `emails`, for those imported already."""
        if not self._created:
            self.table.create(self.conn)
            self._created = True
        table = self.table
        return dict(self.conn.execute(select(table.c.email, table.c.row)
                                      .where(table.c.email.in_(emails))).all())

    def add(self, rows: dict[str, int]) -> None:
        if rows:
            self.conn.execute(insert(self.table),
                              [{"email": email, "row": row} for email, row in rows.items()])


@dataclass(frozen=True)
class _EnrollmentTemplate:
    """How every lead of one (persona, stage, time zone) enrolls, in driver form, without ids."""

    enrollment: dict
    events: list[dict]
    decision: Decision
    sends: bool


class _ChunkWriter:
    """Applies chunks of rows. New and unchanged leads go through bulk statements; the few
    existing leads whose fields or stage change go through the lead and journey services."""

    def __init__(self, conn: Connection, program_id: int, program: Program, now: datetime,
                 summary: ImportSummary, rejects: _Rejects, crm_map: CrmMap):
        self.conn, self.program_id, self.program, self.now = conn, program_id, program, now
        self.summary, self.rejects = summary, rejects
        self.crm_map = crm_map  # which field changes the CRM hears
        self.imported = _ImportedEmails(conn)
        self._leads = _BulkInsert(conn, _LEADS, _LEAD_KEYS)
        self._stages = _BulkInsert(conn, StageChange.__table__, _STAGE_KEYS)
        self._enrollments = _BulkInsert(conn, Enrollment.__table__, _ENROLLMENT_KEYS)
        self._events = _BulkInsert(conn, LeadEvent.__table__, _EVENT_KEYS)
        self._outbox = _BulkInsert(conn, OutboxMessage.__table__, _OUTBOX_KEYS)
        self._crm = _BulkInsert(conn, CrmOutboxItem.__table__, ITEM_COLUMNS)
        self._now = self._leads.convert("created_at", now)
        self._enrolled = Event(EventKind.ENROLLED)
        self._persona = PersonaResolver(program)
        # (persona, stage, timezone) -> the enrollment row and event log rows, in driver form,
        # without lead_id: decide() is pure, so every lead of one cell enrolls the same way.
        self._enrollment_rows: dict[tuple, _EnrollmentTemplate] = {}

    def reject(self, row: LeadRow, error: Invalid) -> None:
        self.rejects.add(row, error)

    def apply(self, chunk: list[LeadRow]) -> None:
        """Import a chunk's rows in file order: each creates, updates or leaves unchanged the
        lead of its email, or is rejected (bad values, an illegal stage change, an email an
        earlier row of the file was imported for). Counts each row once."""
        rows = []
        for row in chunk:
            error = row.error or self._check(row.fields)
            if error:
                self.reject(row, error)
            else:
                rows.append(row)
        if not rows:
            return
        emails = list({row.fields["email"] for row in rows})
        stored = {lead["email"]: {**lead, "custom": lead["custom"] or {}}
                  for lead in self.conn.execute(
                      select(*_STORED).where(_LEADS.c.email.in_(emails))).mappings()}
        imported = self.imported.rows(emails)  # by earlier chunks
        enrolled = self._enrolled_ids([lead["id"] for lead in stored.values()])
        new, to_enroll, changed, first_rows = [], [], [], {}
        for row in rows:
            fields, summary = row.fields, self.summary
            email = fields["email"]
            first = imported.get(email) or first_rows.get(email)
            if first is not None:
                self.reject(row, Invalid(f"duplicate email: row {first} has the same email and "
                                         "was imported; this row was not", field="email"))
                summary.add_duplicate(email, first, row.number)
                continue
            lead = stored.get(email)
            if lead is None:
                new.append({**_NEW_LEAD, **fields})
                summary.created += 1
            else:
                target = fields.get("stage", lead["stage"])
                if target != lead["stage"]:
                    try:
                        check_transition(lead["stage"], target)
                    except IllegalTransition as exc:
                        self.reject(row, exc)
                        continue
                merged = {**lead, **fields, "custom": {**lead["custom"], **fields["custom"]}}
                if merged != lead:
                    changed.append((lead, merged, lead["id"] in enrolled))
                    summary.updated += 1
                else:
                    summary.unchanged += 1
                    if lead["id"] not in enrolled:
                        to_enroll.append(merged)
            first_rows[email] = row.number
        self.imported.add(first_rows)
        qualified = self._insert_new(new) if new else []
        to_enroll += new
        if to_enroll:
            self._enroll(to_enroll)
        if qualified:
            self._reassess(qualified)
        if changed:
            self._update(changed)

    def _check(self, fields: dict) -> Invalid | None:
        """What a row needs beyond clean_lead_fields: a persona the program knows."""
        persona = fields.get("persona")
        if persona is not None and persona not in self.program.personas:
            return Invalid(f"unknown persona {persona!r} in program {self.program.slug} "
                           f"(expected one of {', '.join(self.program.personas)})",
                           field="persona")
        return None

    def _enrolled_ids(self, lead_ids: list[int]) -> set[int]:
        if not lead_ids:
            return set()
        query = select(Enrollment.lead_id).where(Enrollment.program_id == self.program_id,
                                                 Enrollment.lead_id.in_(lead_ids))
        return set(self.conn.scalars(query))

    def _insert_new(self, leads: list[dict]) -> list[str]:
        """Insert new leads, fetch their ids, record their first stage. Returns the emails of
        those whose fit alone may make them MQLs (for the pipeline to route)."""
        now, convert = self._now, self._leads.convert
        fits = [self._fit(lead) for lead in leads]
        self._leads(self.conn, [
            {**lead, "consent": convert("consent", lead["consent"]),
             "custom": convert("custom", lead["custom"]), "created_at": now, "updated_at": now,
             "fit_score": fit, "behaviour_score": 0.0}
            for lead, fit in zip(leads, fits, strict=True)
        ])
        query = select(_LEADS.c.email, _LEADS.c.id).where(
            _LEADS.c.email.in_([lead["email"] for lead in leads]))
        ids = dict(self.conn.execute(query).all())
        first = {"from_stage": None, "at": now, "reason": REASON, "actor": ACTOR,
                 "from_at": None}  # a new lead's first change, as record_stage_change writes it
        stage_rows = []
        for lead in leads:
            lead_id = lead["id"] = ids[lead["email"]]
            stage_rows.append({**first, "lead_id": lead_id, "to_stage": lead["stage"],
                               "path_level": path_level_after(NOT_ON_PATH, lead["stage"])})
        self._stages(self.conn, stage_rows)
        self._crm(self.conn, [self._crm.convert_row(item_row(
            lead_id=lead["id"], email=lead["email"], kind=LEAD_CREATED, now=self.now,
            actor=ACTOR, **new_lead_payload(lead))) for lead in leads])
        rules = self.program.scoring
        if rules.threshold is None:
            return []
        return [lead["email"] for lead, fit in zip(leads, fits, strict=True)
                if is_mql(rules, fit, {**lead["custom"], **lead})]

    def _reassess(self, emails: list[str]) -> None:
        """New leads that may qualify on their fields alone: routed by the pipeline (an MQL
        goes to sales at once, as through any other door)."""
        session = Session(bind=self.conn)  # joins the chunk's transaction, never commits it
        try:
            for lead in session.scalars(select(Lead).where(Lead.email.in_(emails))):
                reassess(session=session, lead=lead, now=self.now)
            session.flush()
        finally:
            session.close()

    def _fit(self, lead: dict) -> float:
        """A new lead's fit points by the program's rules (an updated lead's are refreshed at
        its next scored response)."""
        if not self.program.scoring.fit:
            return 0.0
        fields = lead_fields(lead, lead["custom"])
        return float(sum(a.points for a in fit_awards(self.program.scoring, fields)))

    def _enroll(self, leads: list[dict]) -> None:
        """Enroll leads as journeys.service.enroll does, in bulk statements."""
        enrollments, events, sending = [], [], []
        for lead in leads:
            key = (self._persona(lead_fields(lead, lead["custom"])), lead["stage"],
                   lead["timezone"])
            template = self._enrollment_rows.get(key) or self._enrollment_template(key)
            lead_id = lead["id"]
            enrollments.append({**template.enrollment, "lead_id": lead_id})
            events += [{**row, "lead_id": lead_id} for row in template.events]
            if template.sends:
                sending.append((lead_id, template))
        self._enrollments(self.conn, enrollments)
        self._remember_personas(enrollments)
        self._events(self.conn, events)
        if sending:
            self._queue_sends(sending)

    def _remember_personas(self, enrollments: list[dict]) -> None:
        """The persona of a lead's first enrollment, as journeys.service.enroll keeps it: one
        statement per persona."""
        by_persona: dict[str, list[int]] = defaultdict(list)
        for enrollment in enrollments:
            by_persona[enrollment["persona"]].append(enrollment["lead_id"])
        for persona, lead_ids in by_persona.items():
            self.conn.execute(update(Lead).where(Lead.id.in_(lead_ids),
                                                 Lead.enrolled_persona.is_(None))
                              .values(enrolled_persona=persona))

    def _queue_sends(self, sending: list[tuple[int, _EnrollmentTemplate]]) -> None:
        """Outbox rows for leads whose first step went out at enrolment (see journeys.service)."""
        query = select(Enrollment.lead_id, Enrollment.id).where(
            Enrollment.program_id == self.program_id,
            Enrollment.lead_id.in_([lead_id for lead_id, _ in sending]))
        enrollment_ids = dict(self.conn.execute(query).all())
        rows = []
        for lead_id, template in sending:
            rows += outbox_rows(enrollment_id=enrollment_ids[lead_id], lead_id=lead_id,
                                program_id=self.program_id, program=self.program,
                                decision=template.decision, now=self.now)
        self._outbox(self.conn, [self._outbox.convert_row(row) for row in rows])

    def _enrollment_template(self, key: tuple) -> _EnrollmentTemplate:
        program, program_id, now = self.program, self.program_id, self.now
        state = new_state(program, persona=key[0], stage=key[1], timezone=key[2])
        decision = decide(program, state, self._enrolled, now)
        enrollment = self._enrollments.convert_row(
            {"program_id": program_id, "created_at": now, **enrollment_columns(decision.state, now)})
        events = [event_row(lead_id=0, program_id=program_id, event=self._enrolled, now=now,
                            actor=ACTOR)]
        events += action_rows(lead_id=0, program_id=program_id, decision=decision)
        template = _EnrollmentTemplate(
            enrollment, [self._events.convert_row(row) for row in events], decision,
            sends=any(a.kind is ActionKind.SEND for a in decision.actions))
        self._enrollment_rows[key] = template
        return template

    def _update(self, changed: list[tuple[dict, dict, bool]]) -> None:
        """Existing leads whose fields or stage change: written as every door writes them
        (change_fields, which says what the CRM is told; set_stage), then the pipeline's
        follow-through (engine/flows/leads.py)."""
        session = Session(bind=self.conn)  # joins the chunk's transaction, never commits it
        try:
            leads = {lead.id: lead for lead in session.scalars(
                select(Lead).where(Lead.id.in_([stored["id"] for stored, _, _ in changed])))}
            told: list[dict] = []  # the CRM's field_changed items, inserted in one statement
            fields_changed = {stored["id"]: bool(change_fields(
                session=session, lead=leads[stored["id"]],
                values={name: merged[name] for name in _UPDATED}, now=self.now, actor=ACTOR,
                crm_map=self.crm_map, crm_rows=told)) for stored, merged, _ in changed}
            # before the stage changes below write theirs: each lead's items in the order of
            # what happened to it
            self._crm(self.conn, [self._crm.convert_row(row) for row in told])
            for stored, merged, enrolled in changed:
                lead = leads[stored["id"]]
                if merged["stage"] != stored["stage"]:
                    set_stage(session=session, lead=lead, stage=merged["stage"], reason=REASON,
                              actor=ACTOR, now=self.now)
                follow_through(session=session, lead=lead, changed=fields_changed[lead.id],
                               enroll_in=None if enrolled else (self.program_id, self.program),
                               now=self.now, actor=ACTOR)
            session.flush()
        finally:
            session.close()
