"""Queue names: one place, so the scheduler, the workers and the tests agree."""

NOTIFY = "notify"  # emailing sales notifications: few, and wanted at once
SEND = "send"
RENDER = "render"
TRACKING = "tracking"  # storing buffered opens, clicks and page visits
DEFAULT = "default"
ALL = (NOTIFY, SEND, TRACKING, RENDER, DEFAULT)  # a worker's default priority order
