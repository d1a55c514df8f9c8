"""Nurture: perpetual email nurture programs with built-in asset testing."""
