"""Merge fields: render an email for a sample lead of every persona with strict undefined
variables, and name every variable that does not resolve, with the closest known name when it
looks like a typo (`{{ lead.frist_name }}`: did you mean lead.first_name?).

A sample lead has every standard field filled in, plus the fields its persona's match rules
read, set so that the persona resolves to it (or an explicit `persona` when another persona's
rules would win). A custom field a template reads without a default (`lead.custom.industry`)
is therefore reported: leads without it would get an error or an empty gap. Guard such fields
with `| default(...)` or `{% if ... is defined %}`.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import StrictUndefined
from jinja2.utils import missing

from engine.launch.samples import SAMPLE_LEAD_ID, Sample, sample_fields, sample_leads
from engine.programs.spec import Persona, Program
from engine.render.personalise import (
    Links,
    RenderContext,
    Rendered,
    RenderFailed,
    make_context,
    render_email,
    render_template,
)
from engine.render.sandbox import BoundedSandbox
from qa.findings import Finding, Severity

__all__ = ["SAMPLE_LEAD_ID", "Sample", "render_personas", "sample_fields", "sample_leads"]

MAX_RECORDED = 200


# -- rendering that names every undefined variable --------------------------------------------

_recorded: contextvars.ContextVar[list | None] = contextvars.ContextVar("qa_undefined",
                                                                       default=None)


class RecordingUndefined(StrictUndefined):
    """Fails on the same uses as StrictUndefined (printing, testing, iterating, comparing,
    attribute access) but records the variable and carries on, so one render names every
    unresolved variable instead of stopping at the first. `default` and `is defined` still
    see an undefined value and stay silent, as they do under StrictUndefined."""

    __slots__ = ()

    def _record(self) -> None:
        found = _recorded.get()
        if found is not None and len(found) < MAX_RECORDED:
            found.append((self._undefined_obj, self._undefined_name))

    def __str__(self) -> str:
        self._record()
        return ""

    def __iter__(self):
        self._record()
        return iter(())

    def __bool__(self) -> bool:
        self._record()
        return False

    def __len__(self) -> int:
        self._record()
        return 0

    def __eq__(self, other) -> bool:
        self._record()
        return False

    def __ne__(self, other) -> bool:
        self._record()
        return True

    def __hash__(self) -> int:
        return id(self)

    def __contains__(self, item) -> bool:
        self._record()
        return False

    def __getattr__(self, name: str):
        if name[:2] == "__":
            raise AttributeError(name)
        self._record()
        return self

    __getitem__ = __getattr__


@functools.cache
def _recording_environment(*, html: bool) -> BoundedSandbox:
    return BoundedSandbox(autoescape=html, undefined=RecordingUndefined,
                          keep_trailing_newline=True)


def undefined_names(source: str, variables: dict, *, html: bool,
                    where: str) -> tuple[list[tuple[object, str]], str | None]:
    """The (container, name) of every undefined variable a render of `source` uses, and the
    error that stopped the render, if any (a limit, or an operation on an undefined value)."""
    found: list[tuple[object, str]] = []
    token = _recorded.set(found)
    try:
        template = _recording_environment(html=html).from_string(source)
        render_template(template, variables, where=where)
        error = None
    except RenderFailed as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 (a template that does not even parse)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        _recorded.reset(token)
    return found, error


# -- naming what failed -----------------------------------------------------------------------

def _dotted(container: object, name: str, variables: Mapping) -> tuple[str, list[str]]:
    """`lead.frist_name` and the names that would have been valid in its place."""
    if container is missing:
        return name, sorted(variables)
    lead = variables.get("lead") or {}
    roots = {"lead": lead, "lead.custom": lead.get("custom"), "sender": variables.get("sender"),
             "program": variables.get("program"), "links": variables.get("links")}
    for root, value in roots.items():
        if value is not None and container is value:
            if isinstance(value, Links):
                known = ["unsubscribe", "view_in_browser", "page"]
            else:
                known = [str(k) for k in value]
            return f"{root}.{name}", known
    return f"({type(container).__name__}).{name}", []


def suggestion(name: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return close[0] if close else None


def source_line(source: str, path: str) -> int | None:
    """The first line of `source` that reads `path` (`lead.frist_name`, `lead['frist_name']`)."""
    parent, _, name = path.rpartition(".")
    owner = parent.rpartition(".")[2] or name
    pattern = (rf"\b{re.escape(owner)}\s*(?:\.\s*{re.escape(name)}\b|\[\s*['\"]"
               rf"{re.escape(name)}['\"]\s*\])") if parent else rf"\b{re.escape(name)}\b"
    match = re.search(pattern, source)
    return source.count("\n", 0, match.start()) + 1 if match else None


# -- the check --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PersonaRender:
    persona: Persona
    context: RenderContext
    rendered: Rendered | None  # None when even a lenient render failed


@dataclass
class _Problem:
    path: str
    part: str  # "subject" or "body"
    known: list[str]
    personas: list[str]


def _persona_label(persona: Persona) -> str:
    return f"{persona.name} ({persona.key})" if persona.name != persona.key else persona.key


def render_personas(*, asset: str, source: str, html: str, text: str, subject: str,
                    program: Program, links: Links) -> tuple[list[Finding], list[PersonaRender]]:
    """Render a compiled email (`html`, `text`) for every persona's sample lead: merge-field
    findings (lines from `source`, the MJML), and what each lead would receive (rendered
    leniently when the strict render failed, so that the other checks still see the email)."""
    problems: dict[tuple[str, str], _Problem] = {}
    failures: dict[str, list[str]] = {}
    renders = []
    for sample in sample_leads(program):
        context = make_context(lead=sample.lead, program=program, links=links)
        label = _persona_label(sample.persona)
        try:
            rendered = render_email(version_id=None, html=html, text=text, subject=subject,
                                    context=context, strict=True, where=asset)
        except RenderFailed:
            error = _collect(problems, html, text, subject, context, label, asset)
            if error:
                failures.setdefault(error, []).append(label)
            rendered = _lenient(html, text, subject, context, asset)
        renders.append(PersonaRender(sample.persona, context, rendered))
    return _findings(asset, source, problems, failures), renders


def _collect(problems: dict, html: str, text: str, subject: str, context: RenderContext,
             label: str, asset: str) -> str | None:
    """Record every undefined variable of each part; the error left when none explains it."""
    variables = context.variables()
    errors = []
    for part, source, is_html in (("body", html, True), ("body", text, False),
                                  ("subject", subject, False)):
        found, error = undefined_names(source, variables, html=is_html, where=asset)
        for container, name in found:
            path, known = _dotted(container, name, variables)
            problem = problems.setdefault((part, path), _Problem(path, part, known, []))
            if label not in problem.personas:
                problem.personas.append(label)
        if error and not found:
            errors.append(error)
    return errors[0] if errors else None


def _lenient(html: str, text: str, subject: str, context: RenderContext,
             asset: str) -> Rendered | None:
    try:
        return render_email(version_id=None, html=html, text=text, subject=subject,
                            context=context, strict=False, where=asset)
    except RenderFailed:
        return None


def _findings(asset: str, source: str, problems: dict[tuple[str, str], _Problem],
              failures: dict[str, list[str]]) -> list[Finding]:
    findings = []
    for problem in problems.values():
        name = problem.path.rpartition(".")[2]
        better = suggestion(name, [k for k in problem.known if k != name])
        if problem.part == "subject":
            location = f"subject: {problem.path}"
        else:
            line = source_line(source, problem.path)
            location = f"line {line}: {problem.path}" if line else problem.path
        message = (f"{{{{ {problem.path} }}}} does not resolve for "
                   f"{', '.join(problem.personas)}")
        if better:
            parent = problem.path.rpartition(".")[0]
            message += f": did you mean {parent + '.' if parent else ''}{better}?"
        code = "format.merge-misspelled" if better else "format.merge-unresolved"
        findings.append(Finding(Severity.BLOCKER, code, asset, location, message))
    for error, personas in failures.items():
        findings.append(Finding(Severity.BLOCKER, "format.render-failed", asset, "render",
                                f"rendering for {', '.join(personas)} failed: {error}"))
    return findings
