"""Which persona a lead belongs to in a program: explicit, else the first matching rule set."""

from __future__ import annotations

import re
from functools import lru_cache

from engine.programs.spec import Program


@lru_cache(maxsize=4096)
def _word_pattern(needle: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(needle)}(?!\w)", re.IGNORECASE)


def _norm(value) -> str:
    return str(value).strip().casefold() if value is not None else ""


def _rule_matches(rule: str, expected, fields: dict) -> bool:
    field, _, op = rule.rpartition("_")
    value = fields.get(field)
    if value is None or value == "":
        return False
    if op == "contains":
        return any(_word_pattern(str(needle)).search(str(value)) for needle in expected)
    if op == "in":
        return _norm(value) in {_norm(item) for item in expected}
    return _norm(value) == _norm(expected)


def persona_matches(match: dict, fields: dict) -> bool:
    """All rules of a persona must hold; a persona without rules never matches by itself."""
    return bool(match) and all(_rule_matches(rule, exp, fields) for rule, exp in match.items())


def resolve_persona(program: Program, fields: dict) -> str:
    explicit = fields.get("persona")
    if explicit and explicit in program.personas:
        return explicit
    for persona in program.personas.values():
        if persona_matches(persona.match, fields):
            return persona.key
    return program.default_persona


class PersonaResolver:
    """resolve_persona for many leads, remembered by the values of the fields the rules read."""

    def __init__(self, program: Program, limit: int = 50_000):
        self.program, self.limit = program, limit
        rule_fields = {rule.rpartition("_")[0] for p in program.personas.values() for rule in p.match}
        self.keys = ("persona", *sorted(rule_fields))
        self.cache: dict[tuple, str] = {}

    def __call__(self, fields: dict) -> str:
        key = tuple(fields.get(name) for name in self.keys)
        persona = self.cache.get(key)
        if persona is None:
            if len(self.cache) >= self.limit:
                self.cache.clear()
            persona = self.cache[key] = resolve_persona(self.program, fields)
        return persona
