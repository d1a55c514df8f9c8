"""YAML files people write (program.yaml, scenarios.yaml, crm.yaml), read so that every error
names the file and the line they wrote: `program.yaml:12: message`.

- `read_yaml` reads one file into a `LineMap`, refusing what is not a YAML mapping of text: a
  file over its size cap, not UTF-8, not text, not YAML, nested deeper than MAX_DEPTH.
- `LineLoader` builds mappings (`LineMap`) and lists (`LineSeq`) that remember the line of each
  key and item; `line_of(container, key)` finds it.
- `Checker` collects every error rather than stopping at the first.

An alias (`*a`) is the very object its anchor built, not a copy: a "billion laughs" file holds
little memory and loads fast. What reads the data must still not walk it whole (print it,
compare it, encode it): validators check shapes level by level and show a value only when it
is a scalar (`shown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

MAX_DEPTH = 64  # nesting levels; the deepest file we read is a handful
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class FileError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class FileInvalid(Exception):
    """A file with errors, each as `file:line: message` (the CLI prints them one a line)."""

    def __init__(self, errors: list[FileError]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class LineMap(dict):
    """A mapping that remembers the line of each key (1-based) and its own line, and the keys
    written twice (YAML keeps the last one silently: a validator may refuse them)."""

    line: int = 1
    key_lines: dict
    repeated: list | tuple = ()  # (key, line, first line) of each key written again


class LineSeq(list):
    line: int = 1
    item_lines: list


class TooDeep(yaml.YAMLError):
    def __init__(self, mark):
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")
        self.problem = f"nested deeper than {MAX_DEPTH} levels"
        self.problem_mark = mark


class LineLoader(yaml.SafeLoader):
    _depth = 0

    def compose_node(self, parent, index):
        # Composing recurses once per level: a file of `[[[[...` would otherwise end in a
        # RecursionError instead of an error naming its line.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        written = [key for key, _ in node.value if key.tag != MERGE_TAG]  # before `<<` merges
        mapping = LineMap(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {  # the line of the value kept: the last one written
            self.construct_object(k, deep=True): k.start_mark.line + 1 for k, _ in node.value}
        first: dict = {}
        mapping.repeated = []
        for key_node in written:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first:
                mapping.repeated.append((key, line, first[key]))
            else:
                first[key] = line
        return mapping

    def construct_sequence(self, node, deep=False):
        seq = LineSeq(super().construct_sequence(node, deep=True))
        seq.line = node.start_mark.line + 1
        seq.item_lines = [item.start_mark.line + 1 for item in node.value]
        return seq


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                           LineLoader.construct_mapping)
LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
                           LineLoader.construct_sequence)


def line_of(container, key) -> int:
    """The line of `key` in a LineMap (of item `key` in a LineSeq), else the container's."""
    if isinstance(container, LineMap):
        return container.key_lines.get(key, container.line)
    if isinstance(container, LineSeq) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", 1)


def parse_yaml(text: str, name: str, invalid: type[FileInvalid] = FileInvalid):
    """`text` as YAML (any shape), or `invalid` naming the line of the syntax error."""
    try:
        return yaml.load(text, Loader=LineLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML refuses: a binary file
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or " ")
        raise invalid([FileError(name, line, f"not a text file: character U+{code:04X} is "
                                             "not allowed")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        what = "YAML: " if isinstance(exc, TooDeep) else "YAML syntax error: "
        raise invalid([FileError(name, mark.line + 1 if mark else 1, what + problem)]) from exc


def read_yaml(path: Path, name: str, *, max_bytes: int, what: str,
              invalid: type[FileInvalid] = FileInvalid) -> LineMap:
    """The YAML mapping in `path`, shown in errors as `name`. Raises `invalid` with one error
    when the file is missing, over `max_bytes`, not UTF-8 text, not YAML or not a mapping
    (`what` says what it should be: "a CRM field map")."""
    if not path.exists():
        raise invalid([FileError(name, 1, f"no such file (expected {what})")])
    if not path.is_file():
        raise invalid([FileError(name, 1, f"not a regular file (expected {what})")])
    if path.stat().st_size > max_bytes:
        raise invalid([FileError(name, 1, f"larger than {max_bytes} bytes: not {what}")])
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid([FileError(name, 1, f"not UTF-8: {exc.reason}")]) from exc
    data = parse_yaml(text, name, invalid)
    if not isinstance(data, dict):
        raise invalid([FileError(name, 1, f"{what} must be a mapping"
                                          + (" (the file is empty)" if data is None else ""))])
    return data


def shown(value, limit: int = 80) -> str:
    """A value for an error message: a scalar as written (cut to `limit`), a mapping or a list
    by its kind only (an alias bomb's list prints forever)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Checker:
    """Collects errors of one file (`file`), each at the line of what it is about."""

    def __init__(self, file: str):
        self.file = file
        self.errors: list[FileError] = []

    def error(self, container, key, message: str, file: str | None = None) -> None:
        self.errors.append(FileError(file or self.file, line_of(container, key), message))

    def mapping(self, parent, key, *, required: bool = True) -> LineMap | None:
        value = parent.get(key) if isinstance(parent, dict) else None
        if value is None:
            if required:
                self.error(parent, key, f"missing {key!r}")
            return None
        if not isinstance(value, dict):
            self.error(parent, key, f"{key!r} must be a mapping")
            return None
        return value
