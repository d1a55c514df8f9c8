"""Screenshots of rendered emails at desktop and mobile width, in headless Chromium.

    report = screenshot_emails({"emails/welcome.mjml": html}, Path("report/shots"))
    report.shots     # one Screenshot per email and width: emails_welcome-desktop.png, ...
    report.findings  # render.screenshot (info), render.overflow (warning),
                     # render.screenshot-failed (warning), render.skipped (info, no browser)

The browser is Debian's `chromium` (or NURTURE_CHROMIUM); without one the check is skipped with
a finding that says how to get it, so the rest of QA runs on any machine.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: no port,
no websocket library, nothing for another local user to connect to). The protocol, rather than
`chromium --screenshot`, is what lets us take the full height of the email (we measure the laid
out document and capture it whole) and reuse a browser: each of the `workers` threads keeps one
Chromium for its shots (its start is a third of a cold shot) and opens every shot in a fresh
browser context; a browser that failed a shot is killed and the next shot starts a new one.

The HTML is marketer content, so it is rendered as untrusted:
- it is served to the page from memory at https://email.nurture.invalid/ (a name that can never
  resolve) by intercepting that request; every other request the page makes (images, styles,
  fonts, frames) is failed before it leaves the browser. Not serving it from a file:// URL means
  the page cannot read local files either (an <iframe src="file:///etc/passwd"> stays empty);
- below that, Chromium resolves no host name at all and sends anything that still tries to
  connect (a preconnect hint, which no request interception sees) to a proxy on a closed port;
- JavaScript is off three ways: a Blink setting, the DevTools switch and a CSP header;
- each browser has a new temporary profile, each shot a fresh browser context and a deadline;
  a browser that overruns it is killed with its whole process group;
- output file names are built from sanitised asset names, so files land only inside out_dir.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import math
import os
import queue
import re
import select
import shutil
import signal
import struct
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from qa.findings import Finding, Severity

DEFAULT_WIDTHS: dict[str, int] = {
    # Wide enough to show a 600-px email centred with the margins a desktop client gives it.
    "desktop": 800,
    # An iPhone's CSS width: what `@media (max-width: 480px)` layouts are written for.
    "mobile": 375,
}
DEFAULT_TIMEOUT = 15.0  # seconds per shot; a simple email takes about one on this machine
DEFAULT_WORKERS = 2  # Chromium processes at once: each wants most of a core while it renders
VIEWPORT_HEIGHT = 600  # the first screen; the shot grows to the full height of the email
MAX_HEIGHT = 16_384  # past this the shot is cut: Gmail clips such an email long before anyway
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
SKIP_MESSAGE = "no Chromium found: install Debian's chromium or set NURTURE_CHROMIUM"

_PAGE_URL = "https://email.nurture.invalid/"  # .invalid is reserved: it never resolves
_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline' data:; font-src data:; "
        "script-src 'none'; frame-src 'none'; form-action 'none'; base-uri 'none'")
_NOT_SAFE_IN_NAME = re.compile(r"[^A-Za-z0-9-]+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,10}$")


@dataclass(frozen=True)
class Screenshot:
    asset: str  # as given, e.g. "emails/welcome.mjml"
    width_name: str  # "desktop", "mobile"
    width: int  # pixels (CSS pixels at scale 1)
    height: int
    path: Path
    seconds: float  # wall time to the file written, a worker's browser start included

    def to_dict(self) -> dict[str, Any]:
        # `file` is relative to out_dir: the HTML report sits beside the shots.
        return {"asset": self.asset, "width": self.width_name, "file": self.path.name,
                "pixels": [self.width, self.height], "seconds": round(self.seconds, 3)}


@dataclass
class ScreenshotReport:
    browser: str | None  # the executable used, or None when the check was skipped
    shots: list[Screenshot] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return self.browser is None

    def paths(self) -> dict[str, dict[str, Path]]:
        """asset -> width name -> PNG file."""
        result: dict[str, dict[str, Path]] = {}
        for shot in self.shots:
            result.setdefault(shot.asset, {})[shot.width_name] = shot.path
        return result


class ShotFailed(Exception):
    """Chromium did not produce a screenshot; the message says why, for the finding."""


def find_browser() -> str | None:
    """NURTURE_CHROMIUM (a name or a path), then the usual names on PATH; None when none runs."""
    configured = os.environ.get("NURTURE_CHROMIUM")
    for name in ((configured,) if configured else ()) + BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot_emails(emails: Mapping[str, str], out_dir: Path, *,
                      widths: Mapping[str, int] | None = None,
                      timeout: float = DEFAULT_TIMEOUT,
                      workers: int = DEFAULT_WORKERS) -> ScreenshotReport:
    """Screenshot every email (asset name -> final HTML) at every width into out_dir.

    Writes `<sanitised asset>-<width name>.png`. Never raises for a bad email or a broken
    browser: those become findings. `timeout` bounds each shot; `workers` browsers run at once.
    """
    widths = dict(DEFAULT_WIDTHS if widths is None else widths)
    browser = find_browser()
    if browser is None:
        return ScreenshotReport(browser=None, findings=[_skipped_finding()] if emails else [])
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [_Job(asset, width_name, width, out_dir / f"{stem}-{_safe_name(width_name)}.png",
                 emails[asset])
            for asset, stem in output_stems(list(emails)).items()
            for width_name, width in widths.items()]
    report = ScreenshotReport(browser=browser)
    # In input order, whatever order the shots finished in.
    for shot, findings in _run(browser, jobs, timeout=timeout, workers=workers):
        if shot is not None:
            report.shots.append(shot)
        report.findings.extend(findings)
    return report


@dataclass(frozen=True)
class _Job:
    asset: str
    width_name: str
    width: int
    path: Path
    html: str


def _run(executable: str, jobs: list[_Job], *, timeout: float,
         workers: int) -> list[tuple[Screenshot | None, list[Finding]]]:
    """Each worker keeps one browser for its shots: starting Chromium is a third of a shot."""
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(jobs)):
        pending.put(index)
    outcomes: list[tuple[Screenshot | None, list[Finding]]] = [(None, [])] * len(jobs)

    def work() -> None:
        with Shooter(executable, timeout=timeout) as shooter:
            while True:
                try:
                    index = pending.get_nowait()
                except queue.Empty:
                    return
                outcomes[index] = _shot_outcome(shooter, jobs[index])

    count = max(1, min(workers, len(jobs)))
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="screenshot") as pool:
        for future in [pool.submit(work) for _ in range(count)]:
            future.result()  # a bug in our code still fails loudly
    return outcomes


def output_stems(assets: list[str]) -> dict[str, str]:
    """A file-name stem per asset: `emails/welcome.mjml` -> `emails_welcome`.

    Only letters, digits, `-` and `_` survive, so no name can leave out_dir. Assets whose stems
    collide all get a short hash of their full name, so no shot overwrites another.
    """
    stems = {asset: _safe_name(_EXTENSION.sub("", asset)) for asset in assets}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {asset: stem if counts[stem] == 1
            else f"{stem}-{hashlib.sha256(asset.encode()).hexdigest()[:8]}"
            for asset, stem in stems.items()}


def _safe_name(name: str) -> str:
    # No leading "-": a file name that looks like an option trips up shell tools.
    return _NOT_SAFE_IN_NAME.sub("_", name).strip("_-")[:100] or "email"


def _skipped_finding() -> Finding:
    message = SKIP_MESSAGE
    configured = os.environ.get("NURTURE_CHROMIUM")
    if configured:
        message += f" (NURTURE_CHROMIUM={configured} is not an executable)"
    return Finding(Severity.INFO, "render.skipped", "", "screenshots", message)


def _shot_outcome(shooter: Shooter, job: _Job) -> tuple[Screenshot | None, list[Finding]]:
    """One shot as a Screenshot and its findings; a failure is a finding, never an exception."""
    where = f"{job.width_name} ({job.width}px)"
    started = time.monotonic()
    try:
        png, content_width, content_height = shooter.capture(job.html, width=job.width)
        _write_atomically(job.path, png)
    except ShotFailed as error:
        # A warning, not a blocker: a browser that fails on an email says little about what
        # readers will see, and the reviewer still has every other check of that email.
        return None, [Finding(Severity.WARNING, "render.screenshot-failed", job.asset, where,
                              f"Chromium could not screenshot this email: {error}")]
    height = png_size(png)[1]
    shot = Screenshot(job.asset, job.width_name, job.width, height, job.path,
                      time.monotonic() - started)
    cut = f", cut from {content_height} px" if content_height > height else ""
    findings = [Finding(Severity.INFO, "render.screenshot", job.asset, where,
                        f"{job.path.name}: {job.width}x{height} px{cut} in {shot.seconds:.2f} s")]
    if content_width > job.width:
        findings.append(Finding(Severity.WARNING, "render.overflow", job.asset, where,
                                f"the email is {content_width} px wide in a {job.width} px "
                                "window: readers must scroll sideways (see the screenshot)"))
    return shot, findings


def _write_atomically(path: Path, data: bytes) -> None:
    # A reader of out_dir (the report) never sees half a PNG, and a rerun replaces shots whole.
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise ShotFailed(f"cannot write {path.name}: {error.strerror}") from error


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; ShotFailed when it is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ShotFailed("the browser returned something that is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


class Shooter:
    """A browser for a series of shots, started on first use and replaced after any failure.

    Each shot gets a fresh browser context (its own cookies, storage and cache, like a private
    window), so one email cannot leave anything behind for the next.
    """

    def __init__(self, executable: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.executable = executable
        self.timeout = timeout
        self._browser: _Browser | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def capture(self, html: str, *, width: int) -> tuple[bytes, int, int]:
        """The PNG of `html` at `width` (full height, up to MAX_HEIGHT), and the content's size.

        Raises ShotFailed when the browser does not start, breaks the protocol or overruns.
        """
        deadline = time.monotonic() + self.timeout  # a browser start counts against its shot
        try:
            if self._browser is None:
                self._profile = tempfile.TemporaryDirectory(prefix="nurture-chromium-",
                                                            ignore_cleanup_errors=True)
                self._browser = _Browser.start(self.executable, Path(self._profile.name))
            self._browser.set_deadline(deadline, self.timeout)
            png, content_width, content_height = _render(self._browser, html, width)
        except ShotFailed:
            self.close(graceful=False)  # never reuse a browser in an unknown state
            raise
        if png_size(png)[0] != width:
            raise ShotFailed(f"the browser returned a {png_size(png)[0]} px wide image, "
                             f"not {width}")
        return png, content_width, content_height

    def close(self, *, graceful: bool = True) -> None:
        if self._browser is not None:
            self._browser.close(graceful=graceful)
            self._browser = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None


def _render(browser: _Browser, html: str, width: int) -> tuple[bytes, int, int]:
    context = _field(browser.call("Target.createBrowserContext"), "browserContextId", str)
    target = _field(browser.call("Target.createTarget",
                                 {"url": "about:blank", "browserContextId": context}),
                    "targetId", str)
    session = _field(browser.call("Target.attachToTarget", {"targetId": target, "flatten": True}),
                     "sessionId", str)
    browser.serve(session, html.encode("utf-8", errors="replace"))

    def page(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return browser.call(method, params, session=session)

    page("Emulation.setDeviceMetricsOverride",
         {"width": width, "height": VIEWPORT_HEIGHT, "deviceScaleFactor": 1,
          "mobile": False})  # no zoom-out emulation: the shot is exactly `width` wide
    page("Emulation.setScriptExecutionDisabled", {"value": True})
    page("Fetch.enable", {"patterns": [{"urlPattern": "*"}]})
    page("Page.enable")
    navigation = page("Page.navigate", {"url": _PAGE_URL})
    if navigation.get("errorText"):
        raise ShotFailed(f"the page did not load: {navigation['errorText']}")
    browser.wait_for("Page.loadEventFired")
    size = _field(page("Page.getLayoutMetrics"), "cssContentSize", dict)
    content_width = math.ceil(_field(size, "width", (int, float)))
    content_height = math.ceil(_field(size, "height", (int, float)))
    height = max(1, min(content_height, MAX_HEIGHT))
    shot = _field(page("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}), "data", str)
    browser.call("Target.closeTarget", {"targetId": target})
    browser.call("Target.disposeBrowserContext", {"browserContextId": context})
    browser.serve(None, b"")
    try:
        return base64.b64decode(shot, validate=True), content_width, content_height
    except ValueError as error:
        raise ShotFailed("the browser returned a screenshot that is not base64") from error


def _field(answer: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """A field of a DevTools answer, checked: a browser that answers nonsense is a ShotFailed."""
    value = answer.get(name)
    if not isinstance(value, kind):
        raise ShotFailed(f"the browser answered without a valid {name}")
    return value


def browser_flags(profile: Path) -> list[str]:
    """Chromium's command line for one shot (see the module docstring for the why)."""
    flags = [
        "--headless=new",
        "--disable-gpu",  # no GPU here; software rendering is what headless uses anyway
        "--hide-scrollbars",  # a scrollbar would eat 15 px of the mobile width
        "--remote-debugging-pipe",  # DevTools on fds 3 and 4: no TCP port
        f"--user-data-dir={profile}",
        "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
        "--disable-extensions", "--disable-sync", "--disable-component-update",
        # Chromium's own traffic (updates, safe browsing, field trials) has no place here and
        # only fails on a closed network.
        "--disable-background-networking", "--disable-breakpad", "--mute-audio",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no host resolves, IP literals included
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # nowhere
        "--blink-settings=scriptEnabled=false",
        "--force-color-profile=srgb",  # the same colours on every machine
    ]
    if os.geteuid() == 0:
        # Chromium refuses to start as root with its sandbox ("Running as root without
        # --no-sandbox is not supported"), as on CI and this machine. Our own fences above are
        # what keeps the content in: no network, no scripts, no file access, a throwaway profile.
        flags.append("--no-sandbox")
    return [*flags, "about:blank"]


class _Browser:
    """One Chromium process and its DevTools pipe."""

    def __init__(self, pid: int, to_browser: int, from_browser: int, log: Path) -> None:
        self.pid = pid
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.log = log
        self._deadline = math.inf
        self._timeout = 0.0
        self._session: str | None = None  # the page being shot, whose requests we answer
        self._body = b""
        self._events: list[str] = []  # that page's events so far
        self._buffer = b""
        self._next_id = 0

    @classmethod
    def start(cls, executable: str, profile: Path) -> _Browser:
        # Chromium reads commands on fd 3 and writes answers on fd 4. posix_spawn places them
        # there without preexec_fn, which is unsafe in a threaded process; the parent's ends are
        # moved above 9 first so that placing one never overwrites the other.
        commands_read, commands_write = os.pipe()
        answers_read, answers_write = os.pipe()
        child_in, child_out = _high_fd(commands_read), _high_fd(answers_write)
        log = profile / "chromium.log"
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pid = os.posix_spawn(executable, [executable, *browser_flags(profile)], os.environ,
                                 file_actions=[
                                     (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                     (os.POSIX_SPAWN_DUP2, log_fd, 1),
                                     (os.POSIX_SPAWN_DUP2, log_fd, 2),
                                     (os.POSIX_SPAWN_DUP2, child_in, 3),
                                     (os.POSIX_SPAWN_DUP2, child_out, 4)],
                                 setsid=True)  # its own process group, to kill it whole
        except OSError as error:
            os.close(commands_write)
            os.close(answers_read)
            raise ShotFailed(f"cannot start {executable}: {error.strerror}") from error
        finally:
            for fd in (child_in, child_out, log_fd):
                os.close(fd)
        return cls(pid, commands_write, answers_read, log)

    def set_deadline(self, deadline: float, timeout: float) -> None:
        self._deadline, self._timeout = deadline, timeout

    def serve(self, session: str | None, body: bytes) -> None:
        """Answer `session`'s request for the email with `body` from now on."""
        self._session, self._body, self._events = session, body, []

    def close(self, *, graceful: bool) -> None:
        if graceful:
            try:
                self.set_deadline(time.monotonic() + 1.0, 1.0)
                self._send("Browser.close", {}, session=None)  # let it exit cleanly
            except ShotFailed:
                graceful = False
        self._reap(grace=1.0 if graceful else 0.0)
        os.close(self.to_browser)
        os.close(self.from_browser)

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None) -> dict[str, Any]:
        """Send a command (to a page's session, or to the browser) and return its result."""
        message_id = self._send(method, params or {}, session=session)
        while True:
            message = self._receive()
            if message.get("id") == message_id:
                if "error" in message:
                    error = message["error"]
                    detail = error.get("message", "error") if isinstance(error, dict) else error
                    raise ShotFailed(f"{method}: {detail}")
                result = message.get("result", {})
                if not isinstance(result, dict):
                    raise ShotFailed(f"{method}: the browser answered nonsense")
                return result
            self._on_event(message)

    def wait_for(self, event: str) -> None:
        while event not in self._events:
            self._on_event(self._receive())

    def _on_event(self, message: dict[str, Any]) -> None:
        if self._session is None or message.get("sessionId") != self._session:
            return  # a late event of a page already closed
        method = message.get("method")
        if method == "Fetch.requestPaused":
            self._answer_request(message.get("params", {}))
        elif method == "Inspector.targetCrashed":
            raise ShotFailed("the page crashed")
        elif isinstance(method, str):
            self._events.append(method)

    def _answer_request(self, paused: dict[str, Any]) -> None:
        """Serve the email to its own navigation; fail every other request in the browser."""
        request_id = paused.get("requestId")
        if paused.get("request", {}).get("url") == _PAGE_URL \
                and paused.get("resourceType") == "Document":
            self._send("Fetch.fulfillRequest", {
                "requestId": request_id, "responseCode": 200,
                "responseHeaders": [
                    {"name": "Content-Type", "value": "text/html; charset=utf-8"},
                    {"name": "Content-Security-Policy", "value": _CSP}],
                "body": base64.b64encode(self._body).decode("ascii")}, session=self._session)
        else:
            # Aborted, not an error: a navigation away (a meta refresh) then leaves the email
            # on screen instead of an error page.
            self._send("Fetch.failRequest", {"requestId": request_id, "errorReason": "Aborted"},
                       session=self._session)

    def _send(self, method: str, params: dict[str, Any], *, session: str | None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"  # the pipe protocol: NUL-terminated JSON
        while data:
            self._wait(self.to_browser, select.POLLOUT)
            try:
                data = data[os.write(self.to_browser, data):]
            except BrokenPipeError as error:
                raise self._exited() from error
        return self._next_id

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            self._wait(self.from_browser, select.POLLIN)
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise self._exited()
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        try:
            message = json.loads(raw)
        except ValueError as error:
            raise ShotFailed("the browser spoke no DevTools protocol") from error
        if not isinstance(message, dict):
            raise ShotFailed("the browser spoke no DevTools protocol")
        return message

    def _wait(self, fd: int, event: int) -> None:
        # Every wait counts against the one deadline of the shot: a page that never finishes
        # loading and a browser that never answers end the same way.
        poller = select.poll()
        poller.register(fd, event)
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            stage = "rendering the email" if self._session else "waiting for the browser"
            raise ShotFailed(f"timed out after {self._timeout:g} s {stage}")

    def _exited(self) -> ShotFailed:
        return ShotFailed(f"the browser exited early: {self._log_tail() or 'no message'}")

    def _log_tail(self) -> str:
        # The last meaningful line Chromium printed, minus the D-Bus noise of a machine without
        # a desktop session.
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        useful = [line.strip() for line in lines if line.strip() and "dbus" not in line.lower()]
        return useful[-1][:300] if useful else ""

    def _reap(self, grace: float) -> None:
        """Wait up to `grace` for the browser to exit, then kill its whole process group."""
        until = time.monotonic() + grace
        # WNOWAIT leaves the exited leader a zombie, so its pid (the group id) cannot be reused
        # by another process before the killpg below.
        while time.monotonic() < until and not _has_exited(self.pid):
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # renderers and helpers, and the leader if alive
        with contextlib.suppress(ChildProcessError):  # already reaped by a SIG_IGN'd SIGCHLD
            os.waitpid(self.pid, 0)


def _has_exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high
