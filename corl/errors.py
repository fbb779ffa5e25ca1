"""Errors that carry a message for the user, not a bug report (``corl.cli.entry`` prints them in a line or two)."""

from __future__ import annotations


class UsageError(ValueError):
    """A command line corl cannot run; the message says what to change."""
