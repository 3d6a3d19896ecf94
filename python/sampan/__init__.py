"""Sampan: a small, fast, crash-safe container engine with Docker's interfaces."""

__version__ = "0.1.0"
