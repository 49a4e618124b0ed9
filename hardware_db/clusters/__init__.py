"""Cluster presets, one ``<id>.toml`` per node type (package data; no code)."""
