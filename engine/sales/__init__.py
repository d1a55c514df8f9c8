"""Sales handoff: MQL notifications, the CRM outbox, accept and reject, SLAs."""
