"""Queue names: one place, so the scheduler, the workers and the tests agree."""

SEND = "send"
RENDER = "render"
DEFAULT = "default"
ALL = (SEND, RENDER, DEFAULT)
