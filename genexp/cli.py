"""The `genexp` command: an argparse parser with one subcommand per command; each hands its
arguments, untouched and in order, to that command's own `main(argv)` (Hydra's for `train`,
an argparse parser for the others), which also answers its `--help`.

Shell completion is Hydra's, for `genexp train`'s overrides, plus the command names here:
`eval "$(genexp -sc install=bash)"` (or `genexp train -sc install=bash`); genexp.completion.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {  # name: (module whose main(argv) runs it, what it does)
    "train": ("genexp.command.app", "train one run, or a sweep with -m (Hydra overrides: method=vat labels=200 seed=0,1,2)"),
    "table": ("genexp.tables.table", "mean ± std over seeds of recorded runs: genexp table [DIR ...]"),
    "plot": ("genexp.tables.plot", "accuracy vs labels and training curves as PNG: genexp plot [DIR ...]"),
    "bench": ("genexp.command.bench", "time a step of each method against a supervised step: genexp bench [overrides]"),
    "inequality": ("genexp.studies.inequality.command",
                   "check article 8796's input-vs-parameter gradient inequality on MLPs"),
}
COMPLETION_OPTIONS = ("-sc", "--shell-completion")

EPILOG = """`genexp <command> --help` shows each command's options; `genexp train --help` lists the
config groups (dataset, model, method, optim, experiment) and every key.

shell completion (bash; zsh through bashcompinit): eval "$(genexp -sc install=bash)"
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block and message
        self.exit(2, f"error: {message} (genexp --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genexp", description="Experiments with regularizers (VAT, noise, gradient penalties).",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(*COMPLETION_OPTIONS, dest="completion", metavar="ACTION=SHELL",
                   help="install=bash or uninstall=bash: print the script to eval; query=bash: what it calls")
    sub = p.add_subparsers(dest="command", metavar="<command>", title="commands")
    for name, (_, text) in COMMANDS.items():
        # prefix_chars "\0": the subcommand has no option of its own, so every argument after its
        # name (-m, --cfg job, --help, --) is the command's, as REMAINDER keeps them in order.
        cmd = sub.add_parser(name, help=text, add_help=False, prefix_chars="\0")
        cmd.add_argument("args", nargs=argparse.REMAINDER)
    return p


def command_main(name: str):
    """The `main(argv) -> int` of the command `name`, imported only when it runs."""
    return importlib.import_module(COMMANDS[name][0]).main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    if not argv or argv == ["help"]:
        p.print_help()
        return 0
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # after --help (0) or one line of bad input (2)
        return int(e.code or 0)
    action = args.completion or (completion_action(args.args) if args.command == "train" else None)
    if action is not None:
        return shell_completion(action)
    if args.command is None:
        p.error("no command given")
    return command_main(args.command)(args.args)


def completion_action(args: list[str]) -> str | None:
    """The ACTION=SHELL of a -sc/--shell-completion among `train`'s arguments, if any."""
    for i, a in enumerate(args):
        if a in COMPLETION_OPTIONS and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--shell-completion="):
            return a.split("=", 1)[1]
    return None


def shell_completion(action: str) -> int:
    """`-sc ACTION=SHELL`: Hydra's completion for `train`, the command names for the rest
    (genexp.completion, which imports no command: bash runs it at every TAB)."""
    from genexp import completion

    if action.startswith("query="):
        return completion.query(action, os.environ.get("COMP_LINE", ""), COMMANDS)
    return completion.script(action)


if __name__ == "__main__":
    sys.exit(main())
