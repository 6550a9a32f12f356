"""A run as `genexp table`, `compare` and `plot` find it: its record, read through the one schema
(genexp.runs.record.RunRecord), and beside it, never inside it, the table's own bookkeeping."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genexp.runs.record import RunRecord, Status


@dataclass(frozen=True, eq=False)
class Run:
    """`record` is None when result.json is unreadable (counted as incomplete); `path` is the run
    dir as found, `config` its resolved config.yaml as dotted keys ({} without one)."""

    path: str
    record: RunRecord | None
    config: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return Status.UNREADABLE if self.record is None else self.record.status

    @property
    def readable(self) -> bool:
        return self.record is not None

    @property
    def fields(self) -> Mapping[str, Any]:
        """result.json's keys and values ({} when unreadable)."""
        return self.record if self.record is not None else {}

    def get(self, key: str, default: Any = None) -> Any:
        """A result.json key's value (a key a user names: --metric, --rows)."""
        return self.fields.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.fields
