"""The error types users see. The CLI prints `error: <message>` and exits with the error's code."""
from __future__ import annotations


class S2SError(Exception):
    """A problem with the user's input (file, line, key, device), explained in one line."""

    exit_code = 2


class Interrupted(S2SError):
    """Ctrl-C or a TERM signal; the message says what was saved and how to go on."""

    exit_code = 130  # 128 + SIGINT, what shells report for a command ended by Ctrl-C
