"""Programs with one planted defect each: the sample, copied, with one edit. Built once per
test session in a temporary directory (a copy per defect would repeat the whole sample)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "acme-nurture"
_ROOT = Path(tempfile.mkdtemp(prefix="nurture-defects-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)

# name -> (file, text in the sample, replacement): the one thing each program gets wrong.
DEFECTS: dict[str, list[tuple[str, str, str]]] = {
    "dead-end-track": [  # it_manager/mql holds only a wait
        ("program.yaml", "  it_manager/recycled:", ("  it_manager/mql:      [{wait: 2d}]\n"
                                                   "  it_manager/recycled:"))],
    "empty-cell": [  # finance/recycled removed
        ("program.yaml", ("  finance/recycled:    [{email: product_update}, {wait: 1w}, "
                         "{email: budget_planning_finance}]\n"), ""),
        ("scenarios.yaml", "      track: finance/recycled\n", "")],
    "failing-scenario": [  # the scenario 'IT lead handed to sales, rejected, recycled' expects
        # benchmark_it on day 21
        ("program.yaml", ("  it_manager/recycled: [{email: product_update}, {wait: 5d}, "
                         "{email: benchmark_it}]"), "  it_manager/recycled: [{email: product_update}]")],
    "move-loop": [  # non-responders move to each persona's engaged track
        ("program.yaml", "move_to: reengage}", "move_to: engaged}"),
        ("program.yaml", "  stalled_track: engaged", "  stalled_track: reengage")],
    "unreachable-track": [  # the track of a stage that exits the program
        ("program.yaml", "  it_manager/recycled:", ("  it_manager/sal:      [{email: roi_it}]\n"
                                                   "  it_manager/recycled:"))],
    "unused-email": [  # defined, sent by no track
        ("program.yaml", "\n\npages:", ("\n  webinar_it:          {file: emails/guide_it.mjml, "
                                       "subject: \"Live: migrating without downtime\"}\n\npages:"))],
    "wait-over-year": [  # 400 days before breakup_it
        ("program.yaml", "{email: still_interested_it}, {wait: 4d}, {email: breakup_it}",
         "{email: still_interested_it}, {wait: 400d}, {email: breakup_it}")],
}


@cache
def planted(name: str) -> Path:
    """The directory of the sample with defect `name` planted."""
    directory = _ROOT / name
    shutil.copytree(SAMPLE, directory)
    for file, old, new in DEFECTS[name]:
        path = directory / file
        text = path.read_text()
        if old not in text:
            raise AssertionError(f"{name}: {old!r} is no longer in the sample's {file}")
        path.write_text(text.replace(old, new, 1))
    return directory


def drop_advance(directory: Path) -> Path:
    """Remove a program's `advance:` rules, in place. For tests of scoring, sales and tracking
    mechanics, where a click must leave the lead's stage alone (tests/test_lifecycle.py and
    tests/test_program_advance.py cover the rules, with the sample as shipped)."""
    path = directory / "program.yaml"
    lines = path.read_text().splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("advance:")), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].strip() and not lines[i].startswith(" ")), len(lines))
        path.write_text("".join(lines[:start] + lines[end:]))
    return directory


@cache
def without_advance() -> Path:
    """A copy of the sample without its advance rules (see drop_advance)."""
    directory = _ROOT / "without-advance"
    shutil.copytree(SAMPLE, directory)
    return drop_advance(directory)
