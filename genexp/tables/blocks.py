"""A table over a parent of several sweeps: one block per experiment preset.

Runs of different presets (experiment=none_vs_vat vat_eps=0.3, a plain `method=none,vat` sweep,
an Optuna search) set different keys: in one grid their rows would be keyed by the union of those
keys, most of them unset in most rows. Each preset's runs get a block of their own instead, with
its own row keys and header, named by the preset and by the top-level settings (vat_eps=0.3,
steps=...) it holds and another block does not. A `none` run of two presets is two runs, each
counted in its own block (their configs differ in what the preset set), never pooled.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from genexp.tables.cells import HOW_TO_RUN_KEYS, UNSET, field_value
from genexp.tables.render import short_value
from genexp.tables.run import Run

# The keys that name a run's preset: result.json's `experiment`, config.yaml's `experiment_name`.
EXPERIMENT_KEYS = ("experiment", "experiment_name")
NO_PRESET = "None"


@dataclass
class Block:
    """The runs of one experiment preset and the words that tell them from the other blocks' runs."""

    name: list[str]  # "experiment=none_vs_vat", "vat_eps=0.3"; [] when the table has one block
    results: list[Run]
    experiment: str = ""  # the preset's name ("" without one, or when the table has one block)

    @property
    def title(self) -> str:
        return ", ".join(self.name)


def experiment_of(r: Run) -> str:
    """The run's preset's name; NO_PRESET without one (a run recorded before presets were, too)."""
    value = field_value(r, "experiment")
    value = field_value(r, "experiment_name") if value == UNSET else value
    return NO_PRESET if value == UNSET else value


def split(results: list[Run], chosen: set[str]) -> list[Block]:
    """One block per experiment preset, the runs without one first; one block of all runs when
    they share a preset or a grouping key the user chose (`chosen`: --rows/--cols/--by/--compare)
    is the preset itself."""
    readable = [r for r in results if r.readable]
    by_experiment: dict[str, list[Run]] = defaultdict(list)
    for r in readable:
        by_experiment[experiment_of(r)].append(r)
    if len(by_experiment) < 2 or chosen & set(EXPERIMENT_KEYS):
        return [Block([], results)]
    names = sorted(by_experiment, key=lambda e: (e != NO_PRESET, e))
    # A run whose result.json cannot be read has no preset to go by: it goes with its sweep's runs.
    sweep_of = {str(Path(r.path).parent): experiment_of(r) for r in readable}
    for r in results:
        if not r.readable:
            by_experiment[sweep_of.get(str(Path(r.path).parent), names[0])].append(r)
    settings = {e: _settings(by_experiment[e], chosen) for e in names}
    blocks = []
    for e in names:
        head = [f"experiment={e}" if e != NO_PRESET else "no experiment preset"]
        others = [settings[o] for o in names if o != e]
        own = [f"{k}={short_value(v)}" for k, v in settings[e].items() if any(o.get(k) != v for o in others)]
        blocks.append(Block(head + own, by_experiment[e], e if e != NO_PRESET else ""))
    return blocks


def _settings(runs: list[Run], chosen: set[str]) -> dict[str, str]:
    """The top-level settings (steps, vat_eps, ...: what a user sets by name) every run of `runs` holds
    at one value; the grouping keys and how the runs ran left out."""
    readable = [r for r in runs if r.readable]
    keys = {k for r in readable for k in r.config if "." not in k}
    keys -= HOW_TO_RUN_KEYS | chosen | set(EXPERIMENT_KEYS) | {"seed"}
    out = {}
    for k in sorted(keys):
        values = {field_value(r, k) for r in readable}
        if len(values) == 1 and UNSET not in values:
            out[k] = values.pop()
    return out
