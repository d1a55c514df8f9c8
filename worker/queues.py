"""Queue names: one place, so the scheduler, the workers and the tests agree."""

NOTIFY = "notify"  # emailing sales notifications: few, and wanted at once
SEND = "send"
RENDER = "render"
TRACKING = "tracking"  # storing buffered opens, clicks and page visits
CRM = "crm"  # delivering the CRM outbox: a slow CRM must not hold up sends
DEFAULT = "default"
ALL = (NOTIFY, SEND, TRACKING, CRM, RENDER, DEFAULT)  # a worker's default priority order
