"""Sending: the Transport protocol, the SMTP transport and the local SMTP sink."""
