"""User-facing errors: one line that says what is wrong and how to fix it."""
from __future__ import annotations


class GenexpError(Exception):
    """Bad input or configuration. The CLI prints `error: <message>` and exits with code 2."""

    exit_code = 2


def require(condition: bool, message: str) -> None:
    if not condition:
        raise GenexpError(message)
