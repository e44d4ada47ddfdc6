"""One adapter per evaluation dataset (see :class:`DatasetAdapter`).

    adapter = get_adapter("evqa")
    prepared = adapter.prepare(Path("test.csv"), Path("images"))
"""

from __future__ import annotations

from ragvqa.errors import InputError
from ragvqa.evaluation.adapters.base import (
    PAPER_TABLE_VII,
    DatasetAdapter,
    PaperRow,
    Prepared,
    PreparedQuestion,
    fmt,
)
from ragvqa.evaluation.adapters.evqa import EVQAAdapter
from ragvqa.evaluation.adapters.infoseek import InfoSeekAdapter
from ragvqa.evaluation.adapters.jsonl import JsonlAdapter

ADAPTERS: dict[str, DatasetAdapter] = {
    a.name: a for a in (EVQAAdapter(), InfoSeekAdapter(), JsonlAdapter())
}
DATASETS: tuple[str, ...] = tuple(ADAPTERS)


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter of a dataset name; InputError naming the known ones otherwise."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise InputError(
            f"unknown dataset {name!r}", hint=f"choose one of: {', '.join(DATASETS)}"
        ) from None


__all__ = [
    "ADAPTERS",
    "DATASETS",
    "PAPER_TABLE_VII",
    "DatasetAdapter",
    "EVQAAdapter",
    "InfoSeekAdapter",
    "JsonlAdapter",
    "PaperRow",
    "Prepared",
    "PreparedQuestion",
    "fmt",
    "get_adapter",
]
