"""Checking artifacts against the reference model."""
