"""Capture forms: what a landing page's form gives the lead it creates or updates.

A page's `form:` in program.yaml maps posted fields to lead fields, names the consent checkbox
and the words shown beside it, and maps the visit (its UTM parameters and the referring site)
to the lead's source fields. Pure functions: engine/flows/forms.py applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from engine.errors import Invalid
from engine.leads.fields import clean_value

# What a form may fill in without a map (a posted field of the same name), and where a map
# may point besides: any custom field as `custom.NAME`.
FORM_FIELDS = ("first_name", "last_name", "company", "title", "country")
SOURCE_FIELDS = ("source_channel", "source_offer", "source_partner")
VISIT_PARAMS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
                "referrer")
DEFAULT_SOURCE = {"source_channel": ("utm_medium",), "source_offer": ("utm_campaign",),
                  "source_partner": ("utm_source",)}
REFERRAL = "referral"  # the channel of a visit that came from another site without UTM tags
MAX_VISIT_VALUE = 200
POSTED_TWICE = "posted more than once"


@dataclass(frozen=True)
class Consent:
    field: str  # the checkbox's name
    text: str  # the words the form shows beside it, kept with every answer


@dataclass(frozen=True)
class SourceRule:
    """Where a source field's value comes from: the first visit parameter present, else a
    fixed value."""

    params: tuple[str, ...] = ()
    value: str | None = None

    def to_dict(self) -> dict:
        return {"params": list(self.params), "value": self.value}


@dataclass(frozen=True)
class FormSpec:
    fields: dict[str, str] = field(default_factory=lambda: {n: n for n in FORM_FIELDS})
    consent: Consent | None = None
    source: dict[str, SourceRule] = field(default_factory=lambda: {
        name: SourceRule(params) for name, params in DEFAULT_SOURCE.items()})

    def to_dict(self) -> dict:
        return {"fields": dict(self.fields),
                "consent": ({"field": self.consent.field, "text": self.consent.text}
                            if self.consent else None),
                "source": {name: rule.to_dict() for name, rule in self.source.items()}}

    @classmethod
    def from_dict(cls, data: dict | None) -> FormSpec:
        if not data:
            return cls()
        consent = data.get("consent")
        return cls(fields=dict(data["fields"]),
                   consent=Consent(**consent) if consent else None,
                   source={name: SourceRule(tuple(rule["params"]), rule["value"])
                           for name, rule in data["source"].items()})


def lead_fields(spec: FormSpec, posted: dict) -> dict:
    """The lead fields a submission fills in (standard, and custom as `custom`), by the map;
    what the map does not name stays in the submission only. Raises Invalid naming the posted
    field, as the page's form names it, for a value its lead field cannot take or for a field
    posted more than once (a lead field holds one value)."""
    found: dict = {"custom": {}}
    for name, target in spec.fields.items():
        value = posted.get(name)
        if isinstance(value, list):
            raise Invalid(POSTED_TWICE, field=name)
        value = _lead_value(name, target, value or "")
        if not value:
            continue
        if target.startswith("custom."):
            found["custom"][target.removeprefix("custom.")] = value
        else:
            found[target] = value
    return found


def _lead_value(name: str, target: str, value: str) -> str:
    try:
        return clean_value(target, value)
    except Invalid as exc:  # the visitor knows the form's name for it, not the lead field's
        raise Invalid(exc.detail, field=name) from None


def visit_params(args: dict[str, str], referrer: str | None, own_host: str) -> dict[str, str]:
    """The UTM parameters of a visit and the host of the site it came from (not our own);
    a value that is too long or holds control characters is left out, not an error: the
    visitor's URL is no reason to refuse their form."""
    found = {}
    for name in VISIT_PARAMS[:-1]:
        cleaned = _short_line(name, args.get(name))
        if cleaned:
            found[name] = cleaned
    host = urlsplit(referrer or "").hostname or ""
    if host and host != own_host and len(host) <= MAX_VISIT_VALUE:
        found["referrer"] = host
    return found


def touch_source(spec: FormSpec, posted: dict, visit: dict[str, str]) -> dict[str, str]:
    """The source a submission carries (a touch, for attribution): per source field, the value
    posted under its own name or, failing it, under the UTM parameter it reads by default (a
    hidden field), else the visit's by the page's map. Posted values that are not one short
    line are left out, as a visit's are."""
    found = source_fields(spec, visit)
    for name in SOURCE_FIELDS:
        posted_value = next((cleaned for posted_name in (name, *DEFAULT_SOURCE[name])
                             if (cleaned := _short_line(name, posted.get(posted_name)))), None)
        if posted_value:
            found[name] = posted_value
    return found


def _short_line(name: str, value: object) -> str | None:
    """`value` cleaned as field `name` takes it, or None when it is not one short line of text
    (left out, not an error: a visitor's URL or hidden field is no reason to refuse a form)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        cleaned = clean_value(name, value)
    except Invalid:
        return None
    return cleaned if len(cleaned) <= MAX_VISIT_VALUE else None


def source_fields(spec: FormSpec, visit: dict[str, str]) -> dict[str, str]:
    """The lead's source fields from its visit by the page's map; a visit from another site
    without UTM tags is a referral from that site."""
    found = {}
    for name, rule in spec.source.items():
        value = next((visit[p] for p in rule.params if visit.get(p)), None) or rule.value
        if value:
            found[name] = value
    if "referrer" in visit and not any(k.startswith("utm_") for k in visit):
        found.setdefault("source_channel", REFERRAL)
        found.setdefault("source_partner", visit["referrer"])
    return found
