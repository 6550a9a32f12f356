"""User-facing errors: one line that says what is wrong and how to fix it."""
from __future__ import annotations

import os
from typing import Iterable

TRACEBACK_ENV = "GENEXP_TRACEBACK"


class GenexpError(Exception):
    """Bad input or configuration. The CLI prints `error: <message>` and exits with code 2."""

    exit_code = 2


def require(condition: bool, message: str) -> None:
    if not condition:
        raise GenexpError(message)


def check_choice(key: str, value: str, choices: Iterable[str], *, group: str = "method") -> str:
    """`value` if it is one of `choices`; else a one-line error naming `group.key` and the choices."""
    choices = tuple(choices)
    if value not in choices:
        raise GenexpError(f"{group}.{key}={value!r} is unknown: set {group}.{key} to one of {', '.join(choices)}")
    return value


def show_tracebacks() -> bool:
    """GENEXP_TRACEBACK=1: let errors through with their traceback instead of one line."""
    return os.environ.get(TRACEBACK_ENV) == "1"


def one_line(e: BaseException) -> str:
    """Hydra's multi-line composition errors, folded into one line."""
    parts = []
    for ln in str(e).splitlines():
        if ln.strip().startswith(("Config search path", "provider=")):
            break
        if ln.strip():
            parts.append(ln.strip())
    text = "; ".join(parts)
    return text.replace("Available options in", "available options in").replace(":;", ":")
