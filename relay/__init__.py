"""Leak-tracing mail relay."""

__version__ = "0.1.0"
