"""Tracking: signed tokens for the links and headers leads receive."""
