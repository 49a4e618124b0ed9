"""Measured profiles written by ``autopar profile`` (package data; see README.md)."""
