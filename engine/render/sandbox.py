"""The template sandbox: Jinja's immutable sandbox with every operation bounded before it runs.

Jinja's ImmutableSandboxedEnvironment blocks dunder access and mutation of lists and dicts, but
not work: `9**64**64`, `'%999999999s' % 'a'` or a chain of `~` run for seconds or allocate
gigabytes inside one Python call, where no deadline can stop them. So:

- Every value a template creates is bounded when it is created: a string (or bytes) holds at
  most MAX_VALUE_CHARS characters, a list, tuple or dict at most MAX_ITEMS items and
  MAX_VALUE_CHARS characters once printed (an item shared many times counts each time), an
  integer at most MAX_INT_BITS bits. Operations that can make a result much larger than their
  inputs work its size out from their arguments BEFORE running: `+`, `*`, `**`, `%`, `~`,
  str.format, the str methods center/ljust/rjust/zfill/expandtabs/replace/join/translate and
  the filters center, indent, wordwrap, urlize, replace, join, format, batch, slice, tojson,
  pprint, sum and round. Everything else grows its input by a small constant factor at most
  (escaping, case mapping, URL quoting) and is checked right after.
- Work that is not linear in a bounded input gets a lower cap: filters that loop over items in
  Python take at most MAX_ITEMS items; title, wordwrap and urlize at most MAX_TEXT_CHARS
  characters. So one operation ends within milliseconds; the slowest we found (striptags on a
  million characters of tags) takes about 0.2 s on a loaded machine.
- A deadline (`budget`) is checked before every operation, on every loop iteration and for
  every printed value, so a render stops at most one bounded operation after it.
- What the operations of one render create is counted against MAX_WORK_CHARS, which bounds the
  memory a render can hold (a recursive macro keeping large strings alive on its stack).
- Methods of built-in values are allowlisted (`SAFE_METHODS`): a method not listed cannot be
  sized, and some are slow or huge in one call (`str.encode('punycode')` is quadratic in
  pure Python, `int.to_bytes(10**9)` allocates a gigabyte), so it is refused.
- `~`, list/tuple/dict literals and for-loops cannot be intercepted by Jinja's sandbox hooks;
  the code generator routes them through the environment. Nothing is evaluated at compile
  time (no optimizer; filters and finalize take the context, which Jinja only has at run
  time): it would run outside the budget, when an asset is checked (`'%999999999s' % 'a'`
  folded to 1 GB).

The sizes are worked out in engine/render/limits.py. For sends, the worker's job timeout stays
the last line of defence against a gap in these bounds.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import time
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import Undefined, nodes, pass_context, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import EvalContext
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from markupsafe import Markup

from engine.render.limits import (
    FILTER_CHECKS,
    ITEMWISE_FILTERS,
    MAX_ITEMS,
    MAX_VALUE_CHARS,
    RenderLimitExceeded,
    RenderTimedOut,
    check_binop,
    ensure_bits,
    ensure_chars,
    ensure_items,
    format_field_size,
    joined_size,
    method_result_size,
    printed_size,
)

MAX_WORK_CHARS = 16 * MAX_VALUE_CHARS  # characters created by all operations of a render


# -- the budget of one render -----------------------------------------------------------------

@dataclass
class _Budget:
    seconds: float
    deadline: float
    work: int = 0


_budget: ContextVar[_Budget | None] = ContextVar("render_budget", default=None)


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Bound the renders inside to `seconds` and MAX_WORK_CHARS (outside, only sizes are)."""
    token = _budget.set(_Budget(seconds, time.monotonic() + seconds))
    try:
        yield
    finally:
        _budget.reset(token)


def check_deadline() -> None:
    found = _budget.get()
    if found is not None and time.monotonic() > found.deadline:
        raise RenderTimedOut(f"render took longer than the time limit of {found.seconds} s")


def _spend(chars: int) -> None:
    found = _budget.get()
    if found is not None:
        found.work += chars
        if found.work > MAX_WORK_CHARS:
            raise RenderLimitExceeded(
                f"the render created more than the work limit of {MAX_WORK_CHARS:,} characters")


def checked(value: Any, what: str) -> Any:
    """A value an operation created, refused past the limits and counted against the budget."""
    if isinstance(value, (str, bytes)):
        ensure_chars(len(value), what)
        _spend(len(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        ensure_bits(value.bit_length(), what)
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        ensure_items(len(value), what)
        ensure_chars(printed_size(value), what)
        _spend(len(value))
    return value


def _items(value: Any, what: str) -> Any:
    """`value` for a filter that loops over it in Python: at most MAX_ITEMS items (an iterator
    without a length is read into a list, up to one item past the limit)."""
    if isinstance(value, Undefined) or not isinstance(value, Iterable):
        return value  # the filter reports it
    if not hasattr(value, "__len__"):
        value = list(itertools.islice(value, MAX_ITEMS + 1))
    ensure_items(len(value), what)
    return value


# What a filter takes before its value, from the context every bounded filter is given.
_PASSED = {None: lambda context: (), "context": lambda context: (context,),
           "eval_context": lambda context: (context.eval_ctx,),
           "environment": lambda context: (context.environment,)}


def _bounded_filter(name: str, function: Callable) -> Callable:
    """`function` checked as the module docstring says. It takes the context, which keeps it
    from running at compile time: Jinja folds constant filter calls while compiling, and
    meta.find_undeclared_variables compiles with the optimizer on whatever the environment
    says."""
    passes = getattr(function, "jinja_pass_arg", None)
    passed, skip = _PASSED[passes.name if passes else None], 1 if passes else 0
    signature = inspect.signature(function) if name in FILTER_CHECKS else None
    # Jinja's async-aware filters take an eval context their sync function does not.
    unbound = skip - (1 if getattr(inspect.unwrap(function), "jinja_pass_arg", None) else 0)

    @pass_context
    @functools.wraps(function)
    def bounded(context, *args, **kwargs):
        check_deadline()
        args = (*passed(context), *args)
        if name in ITEMWISE_FILTERS and len(args) > skip:
            args = (*args[:skip], _items(args[skip], f"|{name}"), *args[skip + 1:])
        if signature is not None:
            try:
                arguments = signature.bind(*args[unbound:], **kwargs)
            except TypeError:
                pass  # the call fails below with Python's message
            else:
                arguments.apply_defaults()
                FILTER_CHECKS[name](arguments.arguments)
        return checked(function(*args, **kwargs), f"|{name}")

    return bounded


def _bounded_range(*args: int) -> Iterator[int]:
    values = range(*args)
    try:
        count = len(values)
    except OverflowError:
        count = math.inf
    ensure_items(count, "range()")
    for value in values:
        check_deadline()
        yield value


# -- str.format -------------------------------------------------------------------------------

class _SizedFields:
    """Formatter mixin: each field's size is worked out (width and precision included) before
    it is formatted, and the fields of one call add up."""

    size = 0

    def vformat(self, format_string, args, kwargs):
        self.size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value, conversion):
        if conversion in ("r", "a"):
            ensure_chars(printed_size(value, quoted=True), "str.format")
        return super().convert_field(value, conversion)

    def format_field(self, value, format_spec):
        self.size += format_field_size(value, format_spec)
        ensure_chars(self.size, "str.format")
        return super().format_field(value, format_spec)


class _Formatter(_SizedFields, SandboxedFormatter):
    pass


class _EscapeFormatter(_SizedFields, SandboxedEscapeFormatter):
    pass


# -- the environment --------------------------------------------------------------------------

class _BoundedCodeGenerator(CodeGenerator):
    """Routes what the sandbox hooks cannot see through the environment: `~` (a concat, not a
    binop), list/tuple/dict literals (nested, they print exponentially large) and for-loops
    (which run no operation per iteration and so would never meet the deadline)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja's own: markup_join when autoescaping (volatile: decided at run time).
        markup = "context.eval_ctx.volatile" if frame.eval_ctx.volatile \
            else repr(bool(frame.eval_ctx.autoescape))
        self.write(f"environment.join_values({markup}, (")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")

    def _literal(self, visit: Callable, node: nodes.Node, frame: Frame) -> None:
        self.write("environment.literal(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._literal(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._literal(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":
            self._literal(super().visit_Tuple, node, frame)
        else:  # an assignment target: {% for a, b in ... %}
            super().visit_Tuple(node, frame)

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.iter = nodes.Call(nodes.EnvironmentAttribute("loop_items"), [node.iter], [],
                               None, None, lineno=node.lineno)
        super().visit_For(node, frame)


@pass_eval_context  # a finalize that needs the context never runs at compile time
def _printable(eval_context: EvalContext, value: Any) -> Any:
    check_deadline()
    ensure_chars(printed_size(value), "printing a value")
    return value


_STR_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "format",
    "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit",
    "isidentifier", "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper",
    "join", "ljust", "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace",
    "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines",
    "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill",
    "escape", "striptags", "unescape",  # Markup's
})
# The methods a template may call on a built-in value, by type (the first its value is an
# instance of); a type not listed (a Links, a Rendered...) keeps the sandbox's own rules.
SAFE_METHODS: tuple[tuple[type, frozenset[str]], ...] = (
    (str, _STR_METHODS),
    (bool, frozenset()),
    ((int, float), frozenset({"bit_length", "conjugate", "is_integer"})),
    (dict, frozenset({"get", "items", "keys", "values", "copy"})),
    ((list, tuple), frozenset({"count", "index"})),
    ((set, frozenset), frozenset({"isdisjoint", "issubset", "issuperset", "union",
                                  "intersection", "difference", "symmetric_difference"})),
    ((bytes, bytearray), frozenset()),
)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """See the module docstring."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if not callable(value):
            return True
        allowed = next((names for kinds, names in SAFE_METHODS if isinstance(obj, kinds)), None)
        return allowed is None or attr in allowed

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options):
        super().__init__(**{**options, "optimized": False})  # no template code at compile time
        self.globals = {"range": _bounded_range, "dict": dict}  # no lipsum, cycler, namespace
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.finalize = _printable

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        check_deadline()
        check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        return checked(result, f"{type(left).__name__} {operator} {type(right).__name__}")

    def call(self, context, obj, /, *args, **kwargs):
        check_deadline()
        owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "call")
        if isinstance(owner, (str, bytes)):
            if name == "join" and args:
                args = (_items(args[0], "str.join"), *args[1:])
                ensure_chars(joined_size(owner, args[0]), "str.join")
            size = method_result_size(owner, name, args, kwargs)
            if size is not None:
                ensure_chars(size, f"str.{name}")
        return checked(super().call(context, obj, *args, **kwargs), f"{name}()")

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        return checked(value, "a slice") if isinstance(argument, slice) else value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format and format_map with each field's size checked before it is formatted."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or \
                value.__name__ not in ("format", "format_map") or \
                not isinstance(value.__self__, str):
            return None
        text, is_map = value.__self__, value.__name__ == "format_map"

        def bounded(*args, **kwargs):
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            formatter = _EscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) \
                else _Formatter(self)
            return type(text)(formatter.vformat(text, args, kwargs))

        return functools.update_wrapper(bounded, value)

    def join_values(self, markup: bool, parts: tuple) -> str:
        """`a ~ b ~ c`"""
        check_deadline()
        ensure_chars(sum(printed_size(part) for part in parts), "joining with ~")
        return checked((markup_join if markup else str_join)(parts), "joining with ~")

    def concat(self, chunks: Iterable[str]) -> str:
        """The output of a macro, call, filter or set block, joined."""
        chunks = chunks if isinstance(chunks, list) else list(chunks)
        check_deadline()
        ensure_chars(sum(map(len, chunks)), "a block's output")
        return checked("".join(chunks), "a block's output")

    def literal(self, value: Any) -> Any:
        check_deadline()
        return checked(value, "a literal")

    def loop_items(self, iterable: Iterable) -> Iterator:
        for item in iterable:
            check_deadline()
            yield item
