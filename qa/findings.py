"""What every QA check returns: findings with a severity, a code, where, and a message.

The launch gate reads findings; it never re-checks. A blocker stops a launch unless a reviewer
waives that exact finding (by its `key`) with a reason; an approval finding is cleared only by a
reviewer approving the proof.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class Severity(StrEnum):
    BLOCKER = "blocker"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable and machine-readable, e.g. "link.broken", "format.missing-alt"
    asset: str  # the program file it is about, e.g. "emails/welcome.mjml", or "program.yaml"
    location: str  # where inside it: a line, a link URL, an element, a track step
    message: str  # one sentence a marketer can act on

    @property
    def key(self) -> str:
        """Identifies this finding across runs, for waivers."""
        return f"{self.code}:{self.asset}:{self.location}"

    def to_dict(self) -> dict:
        return {**asdict(self), "severity": self.severity.value, "key": self.key}
