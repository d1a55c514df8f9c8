"""The web console: server-rendered pages for the people who run nurture programs.

/              the leads when signed in, else the sign-in page
/sign-in       GET the form (and, before any user exists, how to create one); POST signs in
/sign-out      POST signs out
/leads         search by text (email, name, company), stage and persona, paged
/leads/<id>    a lead: fields, CRM record, stage history, timeline, score, enrollments and
               explain; POST /leads/<id>/stage sets its stage through the one pipeline
/sales         the MQL queue by score with timelines, accept and reject; SLA breaches by owner
/reviews       the signed-in reviewer's pending proofs and the decisions history;
               /reviews/<proof id> a proof with its email (framed from .../email, sandboxed)
               and findings; POST /reviews/<proof id>/decision approves or rejects it
/delivery      send runs of the last 24 hours, the 24-hour forecast, suppressions (?q= an
               address), and the local sink's inbox when its directory exists;
               /delivery/inbox/<n> a message with its HTML (framed from .../email, sandboxed)
/reports       the reports and their form (program, from, to, by, split; ?report= goes to it);
               /reports/<name>?... a report's tables and SVG charts, .../csv its first table

Every form carries a CSRF token (engine/web/csrf.py's double submit, its own cookie and
salt); every page needs a signed-in user (engine/web/console/session.py) whose role allows it.
"""

from __future__ import annotations

from engine.web.console import delivery, leads, reports, reviews, sales, signin  # noqa: F401 - they add their views
from engine.web.console.base import console, init_console

__all__ = ["console", "init_console"]
