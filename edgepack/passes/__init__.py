"""Compression passes. The registry maps a pass name to its class."""

PASSES: dict = {}
