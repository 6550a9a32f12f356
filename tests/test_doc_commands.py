"""Every `genexp train` command the docs show composes, passes a run's first checks and builds its method.

A renamed key, preset or method otherwise surfaces only when a reader pastes the command. Commands
are read from fenced blocks (backslash continuations joined) and from inline code; one with a
placeholder (`<the run>`, `...`, `$VAR`, `experiment=X`), one that needs a run dir or a user's
config folder, and Hydra's own flags (`--help`, `-sc`) are left out. A sweep composes each of its
values once (not the whole product)."""
import re
import shlex
from pathlib import Path

import pytest
from helpers import train_cfg
from hydra.core.override_parser.overrides_parser import OverridesParser

from genexp.train.build import build_method
from genexp.train.setup import validate_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*genexp train\b(.*)$")
LEFT_OUT = ("<", "...", "…", "$", "resume=", "hydra.searchpath", "allow_targets")
PLACEHOLDER = re.compile(r"=[A-Z]+\b|\[\w+(\.\w+)*=")  # experiment=X, root=DIR, [dataset.download=true]


def _candidates(text: str) -> list[str]:
    found, block, lines = [], False, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            block = not block
        elif block:
            joined = line.strip()
            while joined.endswith("\\") and i + 1 < len(lines):
                i += 1
                joined = joined[:-1].rstrip() + " " + lines[i].strip()
            found.append(joined)
        else:
            found += re.findall(r"`([^`]*genexp train[^`]*)`", line)
        i += 1
    return found


def doc_commands() -> list[tuple[str, str]]:
    commands = []
    for doc in DOCS:
        for raw in _candidates(doc.read_text()):
            m = COMMAND.match(raw.split(" #")[0].strip())  # the command, not its comment's `<time>`
            if m is None:
                continue
            args = m.group(1).strip()
            flags = [t for t in args.split() if t.startswith("-")]
            plain = not any(s in args for s in LEFT_OUT) and not PLACEHOLDER.search(args)
            if plain and set(flags) <= {"-m", "--multirun", "--cfg"}:
                commands.append((doc.name, args))
    return sorted(set(commands))


def jobs(args: str) -> list[list[str]]:
    """Overrides of the jobs that between them take every value of the sweep: the first job, and
    for each swept key the jobs that vary it alone (all values of `method=a,b,c`, not the product)."""
    tokens = shlex.split(args)
    if ">" in tokens:
        tokens = tokens[:tokens.index(">")]
    tokens = [t for t in tokens if t not in ("-m", "--multirun", "--cfg", "job")]
    choices = []
    for o in OverridesParser.create().parse_overrides(tokens):
        if o.key_or_group.startswith("hydra"):
            continue  # launcher and sweeper settings: not the run's config
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{o.get_key_element()}={v}" for v in values])
    first = [c[0] for c in choices]
    return [first] + [first[:i] + [v] + first[i + 1:] for i, c in enumerate(choices) for v in c[1:]]


COMMANDS = doc_commands()


def test_the_docs_show_commands():
    # the extraction itself: README's first command and a multi-line sweep are among those read
    assert ("README.md", "method=vat labels=200") in COMMANDS
    assert ("README.md", "-m method=none,vat seed=0,1,2") in COMMANDS  # its comment names <time>
    assert any(args.startswith("-m method=none,noise,") and "seed=" in args for _, args in COMMANDS)
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("doc,args", COMMANDS, ids=[f"{d}:{a[:60]}" for d, a in COMMANDS])
def test_doc_command_composes(doc, args):
    for overrides in jobs(args):
        cfg = train_cfg(*overrides)
        validate_config(cfg)
        build_method(cfg)  # the method's own checks of its settings
