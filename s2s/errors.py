"""The one error type users see. The CLI prints `error: <message>` and exits 2."""
from __future__ import annotations


class S2SError(Exception):
    """A problem with the user's input (file, line, key, device), explained in one line."""
