"""`nurture crm map show|check`: the CRM field map side by side, and a map file checked."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli_context import AppContext, console, echo_json, err_console, pass_app, styled
from engine.crm.fieldmap import (
    BOTH,
    OBJECTS,
    PULL,
    PUSH,
    CrmMap,
    MapInvalid,
    current_map,
    load_map,
    map_path,
)

ARROWS = {PUSH: "-->", PULL: "<--", BOTH: "<->"}  # ours on the left, the CRM's on the right
HEADER = ("local field", "", "CRM field", "conflict rule", "value map")


@click.group("map")
def crm_map() -> None:
    """The CRM field map (crm.yaml): per object (lead, contact, account, opportunity), each
    local field beside its CRM field, which way it syncs (push, pull, both), the rule when both
    sides changed it, its value map; whether an MQL goes to the CRM as a lead or a contact.

    The map in effect is the instance's: NURTURE_CRM_MAP, by default instance/crm.yaml;
    without it, the default map (a lead's fields pushed by their own names). A crm.yaml in a
    program directory is checked by `nurture program validate` but not applied."""


@crm_map.command("show")
@click.option("--file", "path", type=click.Path(dir_okay=False), default=None,
              help="Show this map file instead of the one in effect.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_app
def show(app: AppContext, path: str | None, as_json: bool) -> None:
    """Print the map side by side: per object, local field | direction | CRM field | conflict
    rule | value map; then the value maps and how MQLs go to the CRM. Says which file is in
    effect, or that the default map is."""
    in_effect = map_path(app.settings)
    try:
        shown = load_map(path) if path else current_map(app.settings)
    except MapInvalid as exc:
        _print_errors(exc, f"{path or in_effect} is not a valid CRM field map"
                           + ("" if path else " (it is the map in effect: nothing syncs by it "
                                              "until it is fixed)"))
        raise SystemExit(1) from None
    if as_json:
        echo_json(map_dict(shown, in_effect=not path or Path(path).resolve() == in_effect))
        return
    if path:
        console.print(f"map: {path} (the map in effect is "
                      f"{in_effect if in_effect.is_file() else 'the default map'})")
    elif shown.source:
        console.print(f"map in effect: {shown.source}")
    else:
        console.print(f"map in effect: the default map (no {in_effect}; set NURTURE_CRM_MAP "
                      "to use another file)")
    _print_map(shown)


@crm_map.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Check FILE as a CRM field map: every error as file:line: message (exit 1 on errors)."""
    try:
        checked = load_map(file)
    except MapInvalid as exc:
        _print_errors(exc, None)
        raise SystemExit(1) from None
    counts = ", ".join(f"{obj} {len(checked.rules(obj))}" + (" (default)" if obj in
                                                              checked.defaulted else "")
                       for obj in OBJECTS)
    console.print(f"{file}: valid ({counts} field(s); MQLs go as a {checked.mql_as})")


def _print_errors(exc: MapInvalid, heading: str | None) -> None:
    if heading:
        err_console.print(heading + ":")
    for error in exc.errors:
        err_console.print(str(error))
    err_console.print(f"{len(exc.errors)} error(s)")


def _print_map(shown: CrmMap) -> None:
    for obj in OBJECTS:
        rules = shown.rules(obj)
        note = " (not in the file: the default map's)" if shown.source and obj in \
            shown.defaulted else ""
        console.print(styled("\n", (obj, "bold"), note))
        rows = [HEADER] + [(rule.local, ARROWS[rule.direction], rule.crm, rule.conflict,
                            rule.values or "") for rule in rules]
        if obj in shown.custom_as_is:
            rows.append(("custom.*", ARROWS[PUSH], "custom.* (as they are)", "", ""))
        if len(rows) == 1:
            console.print("  no field syncs")
            continue
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        for row in rows:
            console.print("  " + "  ".join(cell.ljust(width) for cell, width
                                           in zip(row, widths, strict=True)).rstrip())
    console.print(f"\n{ARROWS[PUSH]} push (ours to the CRM), {ARROWS[PULL]} pull (the CRM's to "
                  f"us), {ARROWS[BOTH]} both")
    if shown.values:
        console.print(styled("\n", ("value maps", "bold"), " (ours -> the CRM's)"))
        for name, pairs in shown.values.items():
            console.print(f"  {name}")
            width = max(len(str(local)) for local in pairs)
            for local, crm in pairs.items():
                console.print(f"    {str(local).ljust(width)}  ->  {crm}")
    console.print(f"\nMQLs go to the CRM as: {shown.mql_as}")
    console.print(f"conflict rule of the fields that name none: {shown.default_conflict}")


def map_dict(shown: CrmMap, *, in_effect: bool) -> dict:
    """The map as JSON: its `file` (None: the default map), whether it is the one in effect,
    and everything it says."""
    return {
        "file": shown.source, "in_effect": in_effect, "mql_as": shown.mql_as,
        "conflict": shown.default_conflict,
        "objects": {obj: {"default": obj in shown.defaulted,
                          "custom_as_is": obj in shown.custom_as_is,
                          "fields": [{"local": r.local, "crm": r.crm, "direction": r.direction,
                                      "conflict": r.conflict, "values": r.values}
                                     for r in shown.rules(obj)]}
                    for obj in OBJECTS},
        "values": {name: [{"local": local, "crm": crm} for local, crm in pairs.items()]
                   for name, pairs in shown.values.items()},
    }

