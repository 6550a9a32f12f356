"""Shell completion for `genexp`: Hydra's for `genexp train`'s overrides, the command names for the rest.

Bash runs `genexp -sc query=bash` at every TAB, so this module imports neither torch nor
genexp.train: Hydra completes from the config files alone, through an app of its own with
`genexp train`'s config (train.yaml) that never runs a job.

Hydra stops completing a word once it holds a comma; a sweep list (`method=none,v`) is completed
here by asking Hydra about the last item (`method=v`) and putting the earlier ones back in front.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from genexp.errors import one_line, show_tracebacks


def _hydra(action: str, **env: str) -> str:
    """What Hydra prints for `genexp train -sc <action>` (with `env` set), the app named `genexp`."""
    import hydra  # here, not at the top: completing a command's name needs none of it

    @hydra.main(config_path="configs", config_name="train", version_base="1.3")
    def train_config(cfg: Any) -> None:  # Hydra's completion reads its config; nothing runs it
        raise AssertionError("the completion app runs only with -sc")

    out = io.StringIO()
    argv = sys.argv
    # Hydra's install script registers the name the app runs under (basename of argv[0]): `genexp`,
    # not "genexp train", which would also register (and run, to complete) any command called train.
    sys.argv = ["genexp", "-sc", action]
    # HYDRA_FULL_ERROR: Hydra raises its errors instead of printing a traceback and exiting 1.
    saved = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", *env)}
    os.environ.update(HYDRA_FULL_ERROR="1", **env)
    try:
        with contextlib.redirect_stdout(out):
            train_config()
    finally:
        sys.argv = argv
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out.getvalue()


def script(action: str) -> int:
    """Print the install=/uninstall=SHELL script; the exit code (2: a bad ACTION=SHELL, one line)."""
    try:
        sys.stdout.write(_hydra(action))
    except Exception as e:
        if show_tracebacks():
            raise
        print(f"error: {one_line(e)} (-sc takes install=bash, uninstall=bash or query=bash)", file=sys.stderr)
        return 2
    return 0


def query(action: str, line: str, commands: Iterable[str]) -> int:
    """Print the completions of the command line `line` (bash's COMP_LINE); the exit code."""
    m = re.match(r"(\s*\S+)\s+train(\s.*)$", line)
    if m:  # Hydra drops the first word and takes the rest as overrides: without "train", they are
        print(_train_overrides(action, m.group(1) + m.group(2)))
        return 0
    words = line.split()
    if len(words) == 1 or (len(words) == 2 and not line.endswith(" ")):  # completing the command's name
        prefix = words[1] if len(words) == 2 else ""
        names = [n for n in (*commands, "--help", "--shell-completion") if n.startswith(prefix)]
        print(("\n" if action.endswith("=fish") else " ").join(names))
    return 0  # the other commands' arguments: nothing here, the shell's file names


def _train_overrides(action: str, line: str) -> str:
    head, _, word = line.rpartition(" ") if not line.endswith(" ") else (line, "", "")
    key, eq, value = word.partition("=")
    if not eq or "," not in value:
        return _ask_hydra(action, line)
    done, _, last = value.rpartition(",")
    listed = set(done.split(","))
    sep = "\n" if action.endswith("=fish") else " "
    items = [c.partition("=")[2] for c in _ask_hydra(action, f"{head} {key}={last}").split()
             if c.startswith(f"{key}=")]
    return sep.join(f"{key}={done},{item}" for item in items if item not in listed)


def _ask_hydra(action: str, line: str) -> str:
    try:
        return _hydra(action, COMP_LINE=line).strip()
    except Exception:
        if show_tracebacks():
            raise
        return ""  # bash prints a TAB's stderr into the line being typed: no completion says enough
