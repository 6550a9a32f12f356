"""The `genexp` command: a thin dispatcher to the subcommands."""
from __future__ import annotations

import sys

USAGE = """usage: genexp <command> [args]

commands:
  train       train one run, or a sweep with -m (Hydra overrides: method=vat labels=200 seed=0,1,2)
  table       mean ± std over seeds of recorded runs: genexp table [DIR ...]
  plot        accuracy vs labels and training curves as PNG: genexp plot [DIR ...]
  bench       time a step of each method against a supervised step: genexp bench [overrides]
  inequality  check article 8796's input-vs-parameter gradient inequality on MLPs

`genexp train --help` lists the config groups (dataset, model, method, optim, experiment)
and every key; `genexp table --help` lists the table options.
"""

COMMANDS = {
    "train": "genexp.train.app",
    "table": "genexp.tables.table",
    "plot": "genexp.tables.plot",
    "bench": "genexp.train.bench",
    "inequality": "genexp.studies.inequality.command",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in COMMANDS:
        import importlib

        return importlib.import_module(COMMANDS[cmd]).main(rest)
    print(f"error: unknown command {cmd!r}: use one of {', '.join(COMMANDS)} (genexp --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
