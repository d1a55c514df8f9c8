"""One signed POST to the CRM webhook, and what came of it. No redirect is followed (a 3xx is
an error: the configured URL must be the final one); `timeout` bounds connecting and each
read. Errors are classified here once (ErrorKind); what to do about them is delivery's."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum

from engine.crm.events import CONTENT_TYPE
from engine.signatures import SIGNATURE_HEADER, sign_webhook

IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Nurture-Event"
ATTEMPT_HEADER = "X-Nurture-Attempt"
USER_AGENT = "nurture-crm-webhook/1"
_KEPT_REPLY = 300  # characters of a reply's body kept in last_error


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"  # no answer within the timeout: the CRM may have it
    CONNECTION = "connection"  # refused, reset, DNS, TLS: nothing or part of it sent
    HTTP_5XX = "http_5xx"
    HTTP_429 = "http_429"  # too many requests
    HTTP_408 = "http_408"  # request timeout
    HTTP_4XX = "http_4xx"  # refused: retrying the same request cannot help
    HTTP_3XX = "http_3xx"  # a redirect, not followed
    BAD_URL = "bad_url"


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: no HTTP answer (error_kind says why)
    error_kind: ErrorKind | None = None  # None: a 2xx
    detail: str = ""  # the reason phrase and the start of the body, or the exception
    retry_after: str | None = None  # the header, as sent

    @property
    def delivered(self) -> bool:
        return self.error_kind is None

    def describe(self) -> str:
        return f"HTTP {self.status}: {self.detail}" if self.status else self.detail


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx


_OPENER = urllib.request.build_opener(_NoRedirect)


def signed_headers(*, secret: str, body: bytes, event_id: str, event_type: str,
                   attempt: int, t: int | None = None) -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign_webhook(secret, body, int(time.time()) if t is None else t),
            IDEMPOTENCY_HEADER: event_id, EVENT_HEADER: event_type, ATTEMPT_HEADER: str(attempt)}


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(64 * 1024)
            return Reply(status=response.status)
    except urllib.error.HTTPError as exc:
        return _http_error(exc)
    except TimeoutError as exc:
        return Reply(None, ErrorKind.TIMEOUT, f"no answer within {timeout:g} s ({exc})")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return Reply(None, ErrorKind.TIMEOUT, f"no answer within {timeout:g} s "
                                                  f"({exc.reason})")
        return Reply(None, ErrorKind.CONNECTION, f"cannot reach {url}: {exc.reason}")
    except (OSError, http.client.HTTPException) as exc:
        return Reply(None, ErrorKind.CONNECTION,
                     f"connection to {url} failed: {type(exc).__name__} {exc}".strip())
    except ValueError as exc:  # urllib's "unknown url type"
        return Reply(None, ErrorKind.BAD_URL, f"bad webhook URL {url!r}: {exc}")


def _http_error(exc: urllib.error.HTTPError) -> Reply:
    try:
        text = exc.read(_KEPT_REPLY).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        text = ""
    finally:
        exc.close()
    status = exc.code
    detail = " ".join(f"{exc.reason} {text}".split())[:_KEPT_REPLY]
    if 300 <= status < 400:
        detail = (f"redirect to {exc.headers.get('Location', '?')} not followed: set the "
                  "webhook URL to the final one")
    return Reply(status, _kind(status), detail, exc.headers.get("Retry-After"))


def _kind(status: int) -> ErrorKind:
    if status == 408:
        return ErrorKind.HTTP_408
    if status == 429:
        return ErrorKind.HTTP_429
    if status >= 500:
        return ErrorKind.HTTP_5XX
    if status >= 400:
        return ErrorKind.HTTP_4XX
    return ErrorKind.HTTP_3XX
