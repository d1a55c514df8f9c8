"""The deployment files the README points to run commands that exist, with options they take."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for line in (DEPLOY / "Procfile").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            found.append((f"Procfile {name}", shlex.split(command)))
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        match = re.search(r"^ExecStart=(.+)$", unit.read_text(encoding="utf-8"), re.MULTILINE)
        assert match, f"{unit.name} has no ExecStart"
        found.append((unit.name, shlex.split(match.group(1))))
    return found


@pytest.mark.parametrize(("where", "argv"), _commands(), ids=[w for w, _ in _commands()])
def test_every_deployed_command_exists(where, argv, tmp_path, monkeypatch):
    monkeypatch.setenv("NURTURE_INSTANCE", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'nurture.db'}")
    program = Path(argv[0]).name
    if program == "nurture":
        result = CliRunner().invoke(main, [*argv[1:], "--help"])
        assert result.exit_code == 0, f"{where}: {result.output}"
        # the options used are the command's own
        for option in (arg.split("=")[0] for arg in argv[1:] if arg.startswith("--")):
            assert option in result.output, f"{where}: {option} is not an option"
    else:
        assert program == "gunicorn" and argv[-1] == "wsgi:app", where
        import importlib.util

        spec = importlib.util.spec_from_file_location("wsgi", DEPLOY.parent / "wsgi.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # `gunicorn wsgi:app` from the checkout
        assert module.app.url_map.bind("localhost").match("/api/v1/programs")
