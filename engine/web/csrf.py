"""Double-submit CSRF for the public HTML forms (landing pages, reviewer pages): a random nonce
in an HttpOnly SameSite cookie scoped to the form's path, and the same nonce signed (with a
salt of its own per form family, so one family's token is refused by another) in the form."""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from flask import Response, current_app, request
from itsdangerous import BadSignature, TimestampSigner
from werkzeug.exceptions import BadRequest

FIELD = "csrf_token"
MAX_AGE = 24 * 3600  # a form left open for a day must be reloaded
EXPIRED = "This form has expired. Go back, reload the page and try again."
_NONCE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


@dataclass(frozen=True)
class Csrf:
    cookie: str
    path: str
    salt: str

    def nonce(self) -> str:
        """The browser's nonce, or a new one (sent back with `with_cookie`)."""
        value = request.cookies.get(self.cookie)
        return value if value and _NONCE.match(value) else secrets.token_urlsafe(32)

    def token(self, nonce: str) -> str:
        return self._signer().sign(nonce).decode()

    def check(self) -> str:
        """The cookie's nonce; 400 unless the form carries it signed (constant-time compare)."""
        nonce, sent = request.cookies.get(self.cookie), request.form.get(FIELD, "")
        if not nonce or not _NONCE.match(nonce) or not sent or len(sent) > 200:
            raise BadRequest(EXPIRED)
        try:
            signed = self._signer().unsign(sent, max_age=MAX_AGE)
        except BadSignature:
            raise BadRequest(EXPIRED) from None
        if not hmac.compare_digest(signed, nonce.encode()):
            raise BadRequest(EXPIRED)
        return nonce

    def with_cookie(self, response: Response, nonce: str) -> Response:
        response.set_cookie(self.cookie, nonce, max_age=MAX_AGE, path=self.path, httponly=True,
                            samesite="Lax", secure=request.is_secure)
        return response

    def _signer(self) -> TimestampSigner:
        return TimestampSigner(current_app.config["SECRET_KEY"], salt=self.salt)
