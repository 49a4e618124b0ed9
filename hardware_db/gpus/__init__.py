"""GPU data files, one ``<id>.toml`` per GPU (package data; no code)."""
