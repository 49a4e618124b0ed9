"""Interconnect data files, one ``<id>.toml`` per link or NIC (package data; no code)."""
