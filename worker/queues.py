"""Queue names: one place, so the scheduler, the workers and the tests agree."""

SEND = "send"
RENDER = "render"
TRACKING = "tracking"  # storing buffered opens, clicks and page visits
DEFAULT = "default"
ALL = (SEND, TRACKING, RENDER, DEFAULT)
