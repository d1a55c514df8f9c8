"""Characters that text from outside (lead fields, bounce reports) may not carry as they are,
and that no output shows as they are: one definition for every door and every printer."""

from __future__ import annotations

import re

# What a terminal may act on instead of showing: C0 controls but tab and newline (ESC starts every
# escape sequence, CR overwrites the line), DEL, and C1 controls (\x9b is CSI on 8-bit
# terminals). The body of a character class, for patterns that add characters of their own.
CONTROL_CHARACTERS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
