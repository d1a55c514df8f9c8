"""Screenshots in headless Chromium: real PNGs at the requested widths and full height, offline
and without scripts, failures as findings in bounded time, and a clear skip without a browser.

Tests marked `chromium` need Debian's chromium (or NURTURE_CHROMIUM); the others drive stand-in
browsers (small shell scripts) and run everywhere.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qa.findings import Severity
from qa.screenshots import (
    SKIP_MESSAGE,
    ScreenshotReport,
    find_browser,
    output_stems,
    screenshot_emails,
)

chromium = pytest.mark.skipif(
    find_browser() is None,
    reason="no Chromium: `apt-get install chromium` (or set NURTURE_CHROMIUM) to run this test")

FITS = """<!doctype html><html><head><meta name="viewport" content="width=device-width">
<style>body{margin:0;font:16px sans-serif} .box{max-width:600px;margin:0 auto;height:1500px;
background:#eef}</style></head><body><div class="box">Hello, a tall email that fits.</div>
</body></html>"""
WIDE = """<html><body style="margin:0"><table width="600" style="width:600px"><tr>
<td style="background:#fee">A fixed 600 px table</td></tr></table></body></html>"""
GARBAGE = "<html><body><table><tr><td>\x00\x01\ufffd\ud800 <b><i>unclosed <<<>>> &bogus; " \
          "<img src=>< /td></html></html><p"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk (no imaging library)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def codes(report: ScreenshotReport, asset: str) -> list[str]:
    return [f.code for f in report.findings if f.asset == asset]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> tuple[ScreenshotReport, Path, float]:
    """One real run over several emails: the browsers start once for all the tests using it."""
    out = tmp_path_factory.mktemp("shots") / "out"
    emails = {"emails/welcome.mjml": FITS, "emails/wide.mjml": WIDE,
              "emails/garbage.mjml": GARBAGE, "../../escape": FITS}
    started = time.monotonic()
    report = screenshot_emails(emails, out)
    return report, out, time.monotonic() - started


@chromium
def test_each_email_is_a_png_at_each_width_and_full_height(shots):
    report, out, _ = shots
    paths = report.paths()["emails/welcome.mjml"]
    assert paths == {"desktop": out.resolve() / "emails_welcome-desktop.png",
                     "mobile": out.resolve() / "emails_welcome-mobile.png"}
    desktop, mobile = png_size(paths["desktop"]), png_size(paths["mobile"])
    assert desktop[0] == 800 and mobile[0] == 375
    # The whole email, not the first screen: the box alone is 1500 px tall.
    assert desktop[1] >= 1500 and mobile[1] >= 1500
    assert codes(report, "emails/welcome.mjml") == ["render.screenshot", "render.screenshot"]
    info = next(f for f in report.findings if f.asset == "emails/welcome.mjml")
    assert info.severity is Severity.INFO and info.location == "desktop (800px)"
    assert info.message.startswith("emails_welcome-desktop.png: 800x")
    shot = report.shots[0]
    assert shot.to_dict()["file"] == "emails_welcome-desktop.png"
    assert (shot.width, shot.height) == desktop


@chromium
def test_a_fixed_width_email_overflows_on_mobile_only(shots):
    report, _, _ = shots
    overflow = [f for f in report.findings if f.code == "render.overflow"]
    assert [(f.asset, f.location) for f in overflow] == [("emails/wide.mjml", "mobile (375px)")]
    assert overflow[0].severity is Severity.WARNING and "600 px wide" in overflow[0].message
    assert png_size(report.paths()["emails/wide.mjml"]["mobile"])[0] == 375  # cut, not widened


@chromium
def test_garbage_html_still_renders(shots):
    report, _, _ = shots
    assert codes(report, "emails/garbage.mjml") == ["render.screenshot", "render.screenshot"]


@chromium
def test_files_land_only_in_out_dir_and_shots_are_quick(shots):
    report, out, seconds = shots
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}-{width}.png" for stem in ("emails_welcome", "emails_wide", "emails_garbage",
                                          "escape") for width in ("desktop", "mobile"))
    assert not any(p.name.endswith(".png") for p in out.parent.iterdir())
    assert report.paths()["../../escape"]["desktop"].parent == out.resolve()
    # Eight shots of simple pages on two browsers: about a second each at most, starts included.
    assert seconds < 15, f"eight shots took {seconds:.1f} s"


class Listener:
    """A local TCP server that records every connection, even one that sends nothing (a
    preconnect), and answers anything with an image-ish 200."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.connections.append(conn.recv(2048))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    self.connections.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def hostile_email(port: int) -> str:
    """Every way an email can ask for the network, or run a script that would make it tall."""
    here = f"127.0.0.1:{port}"
    named = f"localhost:{port}"
    return f"""<html><head>
      <link rel="preconnect" href="http://{here}"><link rel="dns-prefetch" href="//{named}">
      <link rel="prefetch" href="http://{here}/prefetch"><link rel="stylesheet" href="http://{here}/s.css">
      <style>@import url("http://{here}/import.css"); td {{background:url(http://{here}/bg.png)}}
      @font-face {{font-family:x; src:url(http://{named}/f.woff)}} body {{font-family:x}}</style>
      <meta http-equiv="refresh" content="0; url=http://{here}/refresh">
      <script src="http://{here}/script.js"></script>
      <script>document.body.style.height = "5000px"; fetch("http://{here}/fetch");</script>
      </head><body style="margin:0"><table><tr><td>
      <img src="http://{here}/pixel.gif" srcset="http://{named}/2x.png 2x">
      <img src="https://{named}/tls.png"><video poster="http://{here}/poster.png"></video>
      <iframe src="http://{here}/frame"></iframe><object data="http://{here}/obj"></object>
      <iframe src="file:///etc/hostname"></iframe>
      </td></tr></table><script>document.body.style.height = "5000px"</script></body></html>"""


@chromium
@pytest.mark.parametrize("csp", ["kept", "dropped"])
def test_the_email_can_neither_reach_the_network_nor_run_scripts(csp, listener, tmp_path,
                                                                 monkeypatch):
    if csp == "dropped":  # the browser's own fences hold without the page's CSP header
        monkeypatch.setattr("qa.screenshots._CSP", "default-src * 'unsafe-inline'")
    report = screenshot_emails({"emails/hostile.mjml": hostile_email(listener.port)}, tmp_path,
                               widths={"mobile": 375})
    assert [f.code for f in report.findings] == ["render.screenshot"]
    assert listener.connections == [], "the page reached the local server"
    # Had either script run, the body would be 5000 px tall.
    assert png_size(report.shots[0].path)[1] < 5000


@chromium
def test_an_email_that_never_finishes_rendering_times_out_as_a_finding(tmp_path):
    huge = "<table>" + "<tr><td>cell</td><td>more text here</td></tr>" * 200_000 + "</table>"
    started = time.monotonic()
    report = screenshot_emails({"emails/huge.mjml": huge}, tmp_path, widths={"mobile": 375},
                               timeout=1.0)
    elapsed = time.monotonic() - started
    [failed] = report.findings
    assert (failed.severity, failed.code, failed.asset, failed.location) == (
        Severity.WARNING, "render.screenshot-failed", "emails/huge.mjml", "mobile (375px)")
    assert failed.message.startswith("Chromium could not screenshot this email: timed out after 1 s")
    assert report.shots == [] and list(tmp_path.iterdir()) == []
    assert elapsed < 4, f"took {elapsed:.1f} s"  # the timeout, plus killing the browser


def fake_browser(tmp_path: Path, body: str) -> Path:
    """A stand-in for Chromium: a shell script run with Chromium's flags."""
    script = tmp_path / "fake-chromium"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_browser_that_never_answers_is_killed_with_its_children(tmp_path, monkeypatch):
    browser = fake_browser(tmp_path, f"sleep 60 & echo $! > {tmp_path}/child\nwait\n")
    monkeypatch.setenv("NURTURE_CHROMIUM", str(browser))
    started = time.monotonic()
    report = screenshot_emails({"a": FITS}, tmp_path / "out", widths={"mobile": 375},
                               timeout=0.5)
    assert time.monotonic() - started < 3
    [finding] = report.findings
    assert finding.code == "render.screenshot-failed"
    assert "timed out after 0.5 s waiting for the browser" in finding.message
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 2  # SIGKILL is immediate; reaping by init may lag a little
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the browser's child process survived"
    assert not list((tmp_path / "out").iterdir())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped by init


def test_a_browser_that_speaks_garbage_fails_with_a_finding(tmp_path, monkeypatch):
    browser = fake_browser(tmp_path, "printf 'not json\\000' >&4\nsleep 60\n")
    monkeypatch.setenv("NURTURE_CHROMIUM", str(browser))
    report = screenshot_emails({"a": FITS}, tmp_path / "out", widths={"mobile": 375},
                               timeout=5)
    [finding] = report.findings
    assert finding.code == "render.screenshot-failed"
    assert "no DevTools protocol" in finding.message


def test_a_browser_that_exits_says_why(tmp_path, monkeypatch):
    browser = fake_browser(tmp_path, "echo 'Running as root without --no-sandbox' >&2\nexit 1\n")
    monkeypatch.setenv("NURTURE_CHROMIUM", str(browser))
    report = screenshot_emails({"a": FITS}, tmp_path / "out", widths={"mobile": 375},
                               timeout=5)
    [finding] = report.findings
    assert finding.code == "render.screenshot-failed"
    assert finding.message.endswith("the browser exited early: Running as root without "
                                    "--no-sandbox")


def test_at_most_workers_browsers_run_at_once_and_a_failure_gets_a_new_one(tmp_path,
                                                                          monkeypatch):
    log = tmp_path / "log"
    # Each stand-in records its start and end, then exits: every shot fails and the next one
    # starts a new browser (never reusing a failed one), so the log shows how many overlapped.
    browser = fake_browser(tmp_path, f"echo start >> {log}\nsleep 0.3\necho end >> {log}\n")
    monkeypatch.setenv("NURTURE_CHROMIUM", str(browser))
    report = screenshot_emails({f"e{i}": FITS for i in range(3)}, tmp_path / "out",
                               timeout=5, workers=2)
    assert [f.asset for f in report.findings] == ["e0", "e0", "e1", "e1", "e2", "e2"]
    running = peak = 0
    for line in log.read_text().split():
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    assert log.read_text().split().count("start") == 6


def test_without_a_browser_the_check_is_skipped_with_a_clear_message(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-chromium"
    monkeypatch.setenv("NURTURE_CHROMIUM", str(missing))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert find_browser() is None
    report = screenshot_emails({"emails/welcome.mjml": FITS}, tmp_path / "out")
    assert report.skipped and report.shots == []
    [finding] = report.findings
    assert (finding.severity, finding.code) == (Severity.INFO, "render.skipped")
    assert finding.message == f"{SKIP_MESSAGE} (NURTURE_CHROMIUM={missing} is not an executable)"
    assert SKIP_MESSAGE == "no Chromium found: install Debian's chromium or set NURTURE_CHROMIUM"
    assert not (tmp_path / "out").exists()

    monkeypatch.delenv("NURTURE_CHROMIUM")
    assert screenshot_emails({"a": FITS}, tmp_path / "out").findings[0].message == SKIP_MESSAGE
    assert screenshot_emails({}, tmp_path / "out").findings == []


def test_find_browser_prefers_nurture_chromium_then_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = fake_browser(bin_dir, "exit 0\n").rename(bin_dir / "chromium-browser")
    chosen = fake_browser(tmp_path, "exit 0\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("NURTURE_CHROMIUM", str(chosen))
    assert find_browser() == str(chosen)
    monkeypatch.setenv("NURTURE_CHROMIUM", str(tmp_path / "missing"))
    assert find_browser() == str(on_path)


def test_output_names_are_sanitised_and_never_collide():
    stems = output_stems(["emails/welcome.mjml", "../../etc/passwd", "", "a b/ü.html",
                          "x/y.mjml", "x_y.mjml", "/", "..", "-\x00\n"])
    assert stems["emails/welcome.mjml"] == "emails_welcome"
    assert stems["../../etc/passwd"] == "etc_passwd"
    # Nothing left of these names: "email", told apart by a hash of the full name.
    nameless = [stems[name] for name in ("", "/", "..", "-\x00\n")]
    assert len(set(nameless)) == 4 and all(s.startswith("email-") for s in nameless)
    assert not any(s.startswith("-") for s in stems.values())
    assert stems["a b/ü.html"] == "a_b"
    assert stems["x/y.mjml"] != stems["x_y.mjml"]
    assert all(s.startswith("x_y-") for s in (stems["x/y.mjml"], stems["x_y.mjml"]))
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") for s in stems.values())
    assert os.sep not in "".join(stems.values())
