"""Configuration: schemas and their loader."""
