"""Sample leads: one unsaved lead per persona of a program, for proofs and QA renders.

A sample lead has every standard field filled in, plus the fields its persona's match rules
read, chosen so that `resolve_persona` picks that persona from the fields alone. When no value
can do that (an earlier persona's rules also match every candidate, or a persona has no rules
and another one matches the defaults), the sample names its persona explicitly, which
`resolve_persona` honours first: the sample is still rendered as that persona.

This is the engine's definition; qa/ imports it rather than keeping its own.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from engine.leads.models import STANDARD_FIELDS, Lead
from engine.programs.personas import persona_matches, resolve_persona
from engine.programs.spec import Persona, Program

SAMPLE_LEAD_ID = 1_000_000  # ids as long as real ones, so signed tokens have realistic lengths
SAMPLE_VALUES: dict[str, object] = {
    "email": "alex.sample@example.com",
    "first_name": "Alex",
    "last_name": "Sample",
    "company": "Example Industries",
    "title": "Manager",
    "country": "FR",
    "stage": "inquiry",
    "source_channel": "webinar",
    "source_offer": "buyer guide",
    "source_partner": "Example Partner",
    "consent": True,
}
MAX_COMBINATIONS = 64  # candidate values tried per persona before naming the persona instead
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Sample:
    persona: Persona
    lead: Lead

    @property
    def fields(self) -> dict:
        return self.lead.fields()


def sample_fields(program: Program, persona: Persona) -> dict:
    """Lead fields (standard and custom, flat) that resolve to `persona` in `program`."""
    base: dict = {**SAMPLE_VALUES, "timezone": program.timezone, "persona": None}
    per_field = _candidates(persona)
    if not per_field:
        return _named_if_needed(program, persona, base)
    names = list(per_field)
    combinations = itertools.islice(itertools.product(*per_field.values()), MAX_COMBINATIONS)
    first: dict | None = None
    for values in combinations:
        fields = {**base, **dict(zip(names, values, strict=True))}
        first = first or fields
        if resolve_persona(program, fields) == persona.key:
            return fields
    return _named_if_needed(program, persona, first or base)


def sample_leads(program: Program) -> list[Sample]:
    """One unsaved lead per persona, in the program's persona order."""
    samples = []
    for persona in program.personas.values():
        fields = sample_fields(program, persona)
        standard = {k: v for k, v in fields.items() if k in STANDARD_FIELDS}
        custom = {k: v for k, v in fields.items() if k not in STANDARD_FIELDS}
        samples.append(Sample(persona, Lead(id=SAMPLE_LEAD_ID, custom=custom, **standard)))
    return samples


def _candidates(persona: Persona) -> dict[str, list[str]]:
    """For each field the persona's rules read, the values that satisfy every rule on that
    field (a field may carry two rules: `title_contains` and `title_in`)."""
    rules_by_field: dict[str, dict] = {}
    for rule, expected in persona.match.items():
        name = rule.rpartition("_")[0]
        if name == "persona":  # the explicit persona field is not a matchable value
            continue
        rules_by_field.setdefault(name, {})[rule] = expected
    candidates: dict[str, list[str]] = {}
    for name, rules in rules_by_field.items():
        values = [value for rule, expected in rules.items() for value in _values(rule, expected)]
        fitting = [v for v in dict.fromkeys(values)
                   if persona_matches(rules, {name: v}) and _usable(name, v)]
        if fitting:
            candidates[name] = fitting
    return candidates


def _values(rule: str, expected) -> list[str]:
    """Values that could satisfy one rule: each listed word or value, as text."""
    if rule.endswith("_equals"):
        return [str(expected)]
    items = expected if isinstance(expected, list | tuple) else [expected]
    return [str(item) for item in items if str(item).strip()]


def _usable(field: str, value: str) -> bool:
    """The email field must stay an address (templates and headers read it)."""
    return field != "email" or bool(_EMAIL.match(value))


def _named_if_needed(program: Program, persona: Persona, fields: dict) -> dict:
    if resolve_persona(program, fields) != persona.key:
        fields = {**fields, "persona": persona.key}
    return fields
