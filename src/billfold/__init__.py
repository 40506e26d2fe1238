"""Billfold: a real-time billing engine for AI and API products."""

__version__ = "0.1.0"
