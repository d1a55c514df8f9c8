"""Regular expressions written by marketers (a fit rule's `matches`), run by RE2.

RE2 takes time linear in the length of the text whatever the pattern, so no pattern can make a
request backtrack for seconds (Python's `re` takes exponential time on `(a|a?)+$`). The price is
the syntax RE2 leaves out to keep that promise: backreferences, lookahead and lookbehind, atomic
groups, possessive quantifiers, conditionals, and repetition counts above 1000. `compile_pattern`
names the construct when a pattern uses one. Patterns the engine writes itself use `re`.
"""

from __future__ import annotations

import re2


class PatternError(ValueError):
    """A pattern RE2 cannot run; the message says what to change."""


# What RE2 reports for a `(?` it does not know -> the construct, in words.
_GROUPS = {
    "(?=": "lookahead (?=...)",
    "(?!": "negative lookahead (?!...)",
    "(?<=": "lookbehind (?<=...)",
    "(?<!": "negative lookbehind (?<!...)",
    "(?>": "atomic group (?>...)",
    "(?(": "conditional (?(...)...)",
    "(?#": "comment (?#...)",
    "(?P": "named backreference (?P=name) or recursion (?P>name)",
    "(?R": "recursion (?R)",
}


def compile_pattern(pattern: str):
    """The compiled pattern (re2's object: search, match, fullmatch; re2 keeps the last 128
    compiled). Raises PatternError."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        message = exc.args[0].decode("utf-8", "replace") if exc.args else str(exc)
        raise PatternError(_explain(message)) from None


def _explain(message: str) -> str:
    """RE2's error, naming the construct it does not support when that is the cause."""
    problem, _, found = message.partition(": ")
    if problem == "invalid perl operator":
        if found in _GROUPS:
            return f"{_GROUPS[found]} is not supported"
        if found[2:3].isalpha():
            return f"the flag {found[2:]} is not supported (RE2 knows the flags i, m, s and U)"
        return f"the group {found}...) is not supported"
    if problem == "invalid escape sequence":
        if found[1:2].isdigit():
            return f"backreference {found} is not supported"
        if found == r"\Z":
            return r"\Z is not supported (use \z for the end of the text)"
        return f"escape {found} is not supported"
    if problem == "bad repetition operator":
        kind = "possessive quantifier" if found.endswith("+") else "repeated quantifier"
        return f"{kind} {found} is not supported"
    if problem == "invalid repetition size":
        return f"repetition {found} is not supported (at most 1000)"
    return message
