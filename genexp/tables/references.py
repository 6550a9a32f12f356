"""Published figures shown beside genexp's runs (`genexp table --reference`), each with its source."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genexp.errors import GenexpError
from genexp.tables.cells import Metric

BUILTIN_REFERENCES = Path(__file__).with_name("references.yaml")


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@dataclass
class Reference:
    source: str
    short: str
    url: str
    metric: str
    values: dict[str, float]
    dataset: str = ""
    model: str = ""
    labels: str = ""
    setting: str = ""
    names: dict[str, str] = field(default_factory=dict)
    number: int = 0  # [n] in the table's source list
    genexp_dataset: list[str] = field(default_factory=list)  # genexp dataset names it is context for

    def for_datasets(self, datasets: set[str]) -> bool:
        """Whether the figure belongs beside runs on `datasets`: its `genexp_dataset` list, else its
        `dataset`, matched case- and punctuation-insensitively (MNIST ~ mnist, CIFAR-10 ~ cifar10).
        An entry that names no dataset is always shown."""
        names = self.genexp_dataset or ([self.dataset] if self.dataset else [])
        return not names or bool({_norm(n) for n in names} & {_norm(d) for d in datasets})

    def describe(self) -> str:
        return ", ".join(x for x in (self.dataset, self.model, f"{self.labels} labels" if self.labels else "") if x)

    def value_as(self, metric: Metric, method: str) -> tuple[float, str]:
        """The published number in the table's metric when convertible (acc ↔ err on the same split)."""
        v = self.values[method]
        if self.metric == metric.name:
            return v, metric.name
        ref_split = self.metric.replace("_err", "").replace("_acc", "")
        tab_split = metric.name.replace("_err", "").replace("_acc", "")
        one_is_err = ("_err" in self.metric) != ("_err" in metric.name)
        if metric.percent and ref_split == tab_split and one_is_err:
            return 100.0 - v, metric.name
        return v, self.metric


def load_references(path: Path) -> list[Reference]:
    import yaml

    if not path.is_file():
        raise GenexpError(f"--reference {path} does not exist: pass a YAML file of published figures "
                          f"(or --reference builtin for {BUILTIN_REFERENCES.name})")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise GenexpError(f"--reference {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    entries = data.get("references") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise GenexpError(f"--reference {path}: expected a list under 'references:' (see {BUILTIN_REFERENCES})")
    refs = []
    for i, e in enumerate(entries, 1):
        where = f"--reference {path}, entry {i}"
        if not isinstance(e, dict):
            raise GenexpError(f"{where}: expected a mapping with source, url, metric, values")
        for k in ("source", "url", "metric", "values"):
            if not e.get(k):
                raise GenexpError(f"{where}: missing '{k}' (every published figure needs its source and URL)")
        values = e["values"]
        if not isinstance(values, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values.values()):
            raise GenexpError(f"{where}: 'values' must map method names to numbers")
        refs.append(Reference(source=str(e["source"]), short=str(e.get("short") or e["source"][:40]),
                              url=str(e["url"]), metric=str(e["metric"]),
                              values={str(k): float(v) for k, v in values.items()},
                              dataset=str(e.get("dataset", "")), model=str(e.get("model", "")),
                              labels=str(e.get("labels", "")), setting=str(e.get("setting", "")),
                              names={str(k): str(v) for k, v in (e.get("names") or {}).items()}, number=i,
                              genexp_dataset=_as_list(e.get("genexp_dataset"))))
    return refs


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


def resolve_reference(arg: str | None) -> Path | None:
    if arg is None:
        return None
    p = Path(arg)
    if arg in ("builtin", "default") and not p.exists():
        return BUILTIN_REFERENCES
    return p
