"""How large the result of a template operation would be, worked out before it runs.

Pure functions over a template's values, used by engine/render/sandbox.py: each check raises
RenderLimitExceeded naming the limit, and an estimate is an upper bound (up to small constant
factors such as escaping, which the sandbox checks right after the operation).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, MappingView
from typing import Any

from jinja2 import Undefined
from jinja2.exceptions import SecurityError

MAX_VALUE_CHARS = 1_000_000  # any one string, or list/dict as printed
MAX_ITEMS = 10_000  # items of a list, tuple or dict; items a filter loops over; range()
MAX_INT_BITS = 1024  # about 300 decimal digits
MAX_TEXT_CHARS = 20_000  # input of title, wordwrap, urlize (Python work per word, or worse)

_OBJECT_CHARS = 1_000  # printed size of anything else a template reaches (a macro, links)
_NUMBER_CHARS = 450  # a float printed with %f (309 digits) and thousands separators
_CONTAINERS = (list, tuple, set, frozenset, Mapping, MappingView)


class RenderLimitExceeded(SecurityError):
    """A template tried to do more work or produce more output than a message may."""


class RenderTimedOut(RenderLimitExceeded):
    """The render ran out of time: maybe its own doing, maybe a busy machine."""


def printed_size(value: Any, *, quoted: bool = False, indent: int = 0,
                 limit: int = MAX_VALUE_CHARS) -> int:
    """An upper bound of len(str(value)) (of repr(value) when `quoted`; up to doubled quotes and
    backslashes), counting an item as often as it prints; `indent` adds that many characters per item and nesting level
    (JSON or pprint layout). Stops counting past `limit`, so it costs O(limit) at most."""
    seen: dict[tuple[int, int], int] = {}

    def measure(item: Any, depth: int, quoted: bool) -> int:
        if isinstance(item, str):  # a quoted string escapes what it cannot print (\U0010ffff)
            return (len(item) if item.isprintable() else 10 * len(item)) + 3 if quoted \
                else len(item)
        if isinstance(item, bytes):
            return 4 * len(item) + 3 if quoted else len(item)
        if isinstance(item, bool) or item is None:
            return 5
        if isinstance(item, int):
            return item.bit_length() // 3 + 2  # decimal digits and a sign
        if isinstance(item, (float, complex)):
            return 2 * 25
        if isinstance(item, Undefined) or not isinstance(item, _CONTAINERS):
            return _OBJECT_CHARS
        key = (id(item), depth)
        if key not in seen:
            seen[key] = limit + 1  # while counting: a container inside itself never ends
            pieces = itertools.chain.from_iterable(item.items()) if isinstance(item, Mapping) \
                else item
            total = 2
            for piece in pieces:
                total += measure(piece, depth + 1, True) + 2 + indent * (depth + 1)
                if total > limit:
                    break
            seen[key] = total
        return seen[key]

    return measure(value, 0, quoted)


def ensure_chars(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        raise RenderLimitExceeded(
            f"{what} would make {size:,} characters, over the limit of {MAX_VALUE_CHARS:,} "
            "characters per value")


def ensure_items(count: int, what: str) -> None:
    if count > MAX_ITEMS:
        raise RenderLimitExceeded(f"{what} would have {count:,} items, over the limit of "
                                  f"{MAX_ITEMS:,} items")


def ensure_bits(bits: float, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimitExceeded(f"{what} would make a number of {bits:,.0f} bits, over the "
                                  f"limit of {MAX_INT_BITS:,} bits")


def ensure_text(text: str, what: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise RenderLimitExceeded(f"{what} takes at most {MAX_TEXT_CHARS:,} characters (the "
                                  f"text limit), not {len(text):,}")


def _number(digits: str | None) -> int:
    """A width or precision from a format spec (digits far too long for int() are huge)."""
    if not digits:
        return 0
    return int(digits) if len(digits) <= 15 else MAX_VALUE_CHARS + 1


def _int_or_zero(value: Any) -> int:
    return abs(value) if isinstance(value, int) else 0


def _text(value: Any, what: str) -> str:
    """A filter's text argument as the filter will see it (str() of anything else)."""
    if isinstance(value, str):
        return value
    ensure_chars(printed_size(value), what)
    return str(value)


# -- operations that can grow their input -----------------------------------------------------

def check_binop(operator: str, left: Any, right: Any) -> None:
    what = f"{type(left).__name__} {operator} {type(right).__name__}"
    sequences = (str, bytes, list, tuple)
    if operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        ensure_bits(right * math.log2(abs(left)) if right.bit_length() < 64 else math.inf, what)
    elif operator == "*" and _is_int(left) and _is_int(right):
        ensure_bits(left.bit_length() + right.bit_length(), what)
    elif operator == "*" and (isinstance(left, sequences) or isinstance(right, sequences)):
        seq, times = (left, right) if isinstance(left, sequences) else (right, left)
        if _is_int(times):
            times = max(times, 0)
            if isinstance(seq, (list, tuple)):
                ensure_items(len(seq) * times, what)
            ensure_chars(printed_size(seq) * times, what)
    elif operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        if isinstance(left, (list, tuple)):
            ensure_items(len(left) + len(right), what)
        ensure_chars(printed_size(left) + printed_size(right), what)
    elif operator == "%" and isinstance(left, (str, bytes)):
        ensure_chars(printf_size(left, right), f"{what} (printf formatting)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int)  # bools too: True * 'x' is 'x'


_FLAGS = "-+ #0"


def printf_size(template: str | bytes, values: Any) -> int:
    """An upper bound of len(template % values): each conversion as wide as its width,
    precision and value allow, parsed the way Python parses it."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    positional = iter(values if isinstance(values, tuple) else (values,))
    mapping = values if isinstance(values, Mapping) else {}
    size, at = len(text), text.find("%")
    while at != -1:
        at += 1
        key = None
        if text.startswith("(", at):  # a mapping key; parentheses may nest
            depth, end = 1, at + 1
            while end < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            key, at = text[at + 1:end - 1], end
        while at < len(text) and text[at] in _FLAGS:
            at += 1
        width, at = _printf_number(text, at, positional)
        precision = None
        if text.startswith(".", at):
            precision, at = _printf_number(text, at + 1, positional)
        while at < len(text) and text[at] in "hlL":
            at += 1
        conversion = text[at:at + 1]
        at += 1
        if conversion == "%":
            piece = 1
        else:
            value = mapping.get(key) if key is not None else next(positional, None)
            piece = _conversion_size(conversion, value, precision)
        size += max(width, piece)
        at = text.find("%", at)
    return size


def _printf_number(text: str, at: int, positional: Iterator) -> tuple[int, int]:
    if text.startswith("*", at):
        return _int_or_zero(next(positional, 0)), at + 1
    end = at
    while end < len(text) and text[end] in "0123456789":
        end += 1
    return _number(text[at:end]), end


def _conversion_size(conversion: str, value: Any, precision: int | None) -> int:
    if not conversion:
        return 0  # a lone % at the end: Python refuses it
    if conversion in "sra":
        size = printed_size(value, quoted=conversion != "s")
        return size if precision is None else min(size, precision)
    if conversion in "diuoxX":
        digits = printed_size(value) if isinstance(value, int) else _NUMBER_CHARS
        return max(digits, precision or 0) + 2
    if conversion in "eEfFgG":
        return _NUMBER_CHARS + (precision or 0)
    return 1  # c, or a conversion Python refuses


_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?([0-9]*)[,_]?(?:\.([0-9]*))?[a-zA-Z%]?", re.DOTALL)


def format_field_size(value: Any, spec: str) -> int:
    """An upper bound of len(format(value, spec))."""
    match = _FORMAT_SPEC.fullmatch(spec)
    if match is None:  # a type's own spec (dates): a few characters per spec character
        return printed_size(value) + 32 * len(spec)
    width, precision = _number(match.group(1)), _number(match.group(2))
    return max(width, printed_size(value) + precision + _NUMBER_CHARS)


def replaced_size(text: str | bytes, old: Any, new: Any, count: Any) -> int:
    kind = str if isinstance(text, str) else bytes  # Markup takes (and escapes) any str
    if not isinstance(old, kind) or not isinstance(new, kind):
        return len(text)  # Python refuses it
    found = text.count(old) if old else len(text) + 1
    if _is_int(count) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def joined_size(separator: Any, items: list) -> int:
    return sum(printed_size(item) for item in items) + \
        printed_size(separator) * max(len(items) - 1, 0)


# str (and bytes, Markup) methods: the size of the result from the arguments, before the call.
def method_result_size(text: str | bytes, name: str, args: tuple,
                       kwargs: dict) -> int | None:
    arg = (lambda i, key, default: args[i] if len(args) > i else kwargs.get(key, default))
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(len(text), _int_or_zero(arg(0, "width", 0)))
    if name == "expandtabs":
        return len(text) + text.count("\t" if isinstance(text, str) else b"\t") * \
            _int_or_zero(arg(0, "tabsize", 8))
    if name == "replace":
        return replaced_size(text, arg(0, "old", ""), arg(1, "new", ""), arg(2, "count", -1))
    if name == "translate":
        table = arg(0, "table", None)
        mapped = table.values() if isinstance(table, Mapping) else \
            table if isinstance(table, (list, tuple)) else ()
        longest = max((printed_size(v) for v in itertools.islice(mapped, MAX_ITEMS)), default=1)
        return len(text) * max(longest, 1)
    return None


def _filter_checks() -> dict[str, Callable[[dict], None]]:
    """Filter name -> a check of its arguments (named as the filter names them)."""

    def center(a):
        ensure_chars(max(len(_text(a["value"], "|center")), _int_or_zero(a["width"])), "|center")

    def indent(a):
        text, width = _text(a["s"], "|indent"), a["width"]
        prefix = len(width) if isinstance(width, str) else _int_or_zero(width)
        ensure_chars(len(text) + prefix * (text.count("\n") + 2), "|indent")

    def wordwrap(a):
        text = _text(a["s"], "|wordwrap")
        ensure_text(text, "|wordwrap")
        breaks = len(text) + 1  # at worst, one line per character
        ensure_chars(len(text) + breaks * printed_size(a["wrapstring"] or "\n"), "|wordwrap")

    def urlize(a):
        text = _text(a["value"], "|urlize")
        ensure_text(text, "|urlize")
        words = len(text) // 2 + 1  # each may become <a href="word" rel=".." target="..">word</a>
        attributes = printed_size(a["rel"] or "") + printed_size(a["target"] or "") + 64
        ensure_chars(3 * len(text) + words * attributes, "|urlize")

    def title(a):
        ensure_text(_text(a["s"], "|title"), "|title")

    def replace(a):
        text = _text(a["s"], "|replace")
        old, new = _text(a["old"], "|replace"), _text(a["new"], "|replace")
        ensure_chars(replaced_size(text, old, new, a["count"]), "|replace")

    def join(a):
        ensure_chars(joined_size(a["d"], a["value"]), "|join")

    def format_(a):
        template = _text(a["value"], "|format")
        ensure_chars(printf_size(template, a["kwargs"] or a["args"]), "|format")

    def batch(a):
        count = _int_or_zero(a["linecount"])
        ensure_items(count, "|batch")
        ensure_chars(printed_size(a["value"]) + count * printed_size(a["fill_with"]), "|batch")

    def slice_(a):
        count = _int_or_zero(a["slices"])
        ensure_items(count, "|slice")
        ensure_chars(printed_size(a["value"]) + count * printed_size(a["fill_with"]), "|slice")

    def tojson(a):
        spaces = a["indent"]
        spaces = len(spaces) if isinstance(spaces, str) else _int_or_zero(spaces)
        ensure_chars(printed_size(a["value"], quoted=True, indent=spaces + 1), "|tojson")

    def pprint(a):
        ensure_chars(printed_size(a["value"], quoted=True, indent=2), "|pprint")

    def sum_(a):
        if not isinstance(a["start"], (int, float)):
            raise RenderLimitExceeded("|sum adds numbers: its start must be a number")

    def round_(a):
        ensure_bits(_int_or_zero(a["precision"]) * math.log2(10), "|round")

    return {"center": center, "indent": indent, "wordwrap": wordwrap, "urlize": urlize,
            "title": title, "replace": replace, "join": join, "format": format_, "batch": batch,
            "slice": slice_, "tojson": tojson, "pprint": pprint, "sum": sum_, "round": round_}


FILTER_CHECKS = _filter_checks()
# Filters that loop over their input item by item in Python.
ITEMWISE_FILTERS = frozenset({
    "batch", "dictsort", "groupby", "join", "last", "list", "map", "max", "min", "random",
    "reject", "rejectattr", "reverse", "select", "selectattr", "slice", "sort", "sum", "unique"})
