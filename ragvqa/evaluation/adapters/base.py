"""What the evaluation needs to know about a dataset, behind one interface.

The runner, the report, ``ragvqa eval`` and ``ragvqa score`` never test a
dataset's name: they ask its :class:`DatasetAdapter` (one per dataset, in
:mod:`ragvqa.evaluation.adapters`) how to read its questions, which prompt
variant the generator uses, how predictions are scored and which rows the
report shows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class PreparedQuestion:
    """A question ready to run.

    Attributes:
        key: the question's id as text (E-VQA: the CSV data row; InfoSeek: data_id).
        question: the question text.
        image: the question's photo on disk.
        positives: page keys that count as the right page (Recall@K).
        answers: answer strings for pseudo-recall@K.
        source: the dataset's own row object (EVQAQuestion | InfoSeekQuestion).
    """

    key: str
    question: str
    image: Path
    positives: set[str]
    answers: list[str]
    source: Any


@dataclass
class Prepared:
    """Questions that can run, and counts of those that cannot (``skipped_<why>``)."""

    questions: list[PreparedQuestion]
    counts: Counter = field(default_factory=Counter)
    total: int = 0


@dataclass(frozen=True)
class PaperRow:
    """One row of the ReT-2 paper's Table VII (k = 3 retrieved documents; reference/ret2.md)."""

    generator: str
    retriever: str
    evqa_single_hop: float
    evqa_all: float
    infoseek_unseen_question: float
    infoseek_unseen_entity: float
    infoseek_all: float


PAPER_TABLE_VII: tuple[PaperRow, ...] = (
    PaperRow("Qwen2.5-VL-7B", "none", 19.8, 19.7, 18.6, 18.1, 18.3),
    PaperRow("Qwen2.5-VL-7B", "CLIP ViT-L", 19.5, 20.4, 18.7, 17.9, 18.3),
    PaperRow("Qwen2.5-VL-7B", "ReT-2", 33.5, 31.6, 27.9, 25.1, 26.4),
    PaperRow("LLaVA-MORE-8B", "none", 13.8, 14.9, 8.9, 8.0, 8.4),
    PaperRow("LLaVA-MORE-8B", "ReT-2", 28.5, 27.1, 24.3, 21.5, 22.8),
)


def fmt(value: Any) -> str:
    """A metric as a report cell: 2 decimals for floats, ``n/a`` for None."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class DatasetAdapter(ABC):
    """One evaluation dataset: its files, ids, prompt, scorer and report rows.

    Class attributes:
        name: the ``--dataset`` value (``evqa``, ``infoseek``).
        title: the dataset's name in reports.
        id_field: the id key of its prediction lines (official format).
        prompt_variant: the generator's prompt variant
            (``ragvqa.generation.prompts``).
        score_columns: the headline score columns of the report's table.
        summary_keys: answer metrics ``ragvqa eval`` prints.
        uses_bem: whether its scorer takes a BEM model (``--bem``).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    id_field: ClassVar[str]
    prompt_variant: ClassVar[str]
    score_columns: ClassVar[tuple[str, ...]]
    summary_keys: ClassVar[tuple[str, ...]]
    uses_bem: ClassVar[bool] = False

    # -- questions ---------------------------------------------------------------

    @abstractmethod
    def prepare(
        self,
        questions: Path,
        images: Path,
        *,
        limit: int | None = None,
        qtypes: Path | None = None,
        inat_map: Path | None = None,
    ) -> Prepared:
        """Read the question file and keep the questions that can be scored.

        Questions that cannot (unknown type, empty reference, no image on
        disk, ...) are counted in ``Prepared.counts`` as ``skipped_<why>``.

        Raises:
            InputError / DataError: a missing or malformed file.
        """

    @abstractmethod
    def external_id(self, key: str) -> Any:
        """A prepared question's key as its prediction lines write it."""

    # -- scoring -----------------------------------------------------------------

    @abstractmethod
    def score(
        self,
        answered: Sequence[PreparedQuestion],
        predictions: dict[str, dict[str, Any]],
        *,
        bem: Any | None = None,
    ) -> dict[str, Any]:
        """Official scores of the answered questions (prediction rows by key).

        Returns the scorer's metrics plus ``per_question``: key ->
        ``{"score": 0.0 | 1.0, ...}``.
        """

    @abstractmethod
    def score_file(
        self,
        predictions: Path,
        references: Path,
        *,
        qtypes: Path | None = None,
        bem: Any | None = None,
    ) -> dict[str, Any]:
        """Score a predictions file against the official reference file(s)."""

    # -- report ------------------------------------------------------------------

    @abstractmethod
    def run_scores(self, answers: dict[str, Any]) -> tuple[Any, ...]:
        """This run's values for :attr:`score_columns`."""

    @abstractmethod
    def paper_scores(self, row: PaperRow) -> tuple[float, ...]:
        """A Table VII row's values for :attr:`score_columns`."""

    def run_label_note(self, answers: dict[str, Any]) -> str:
        """Text after "this run" in the score table (e.g. why a score is a lower bound)."""
        return ""

    @abstractmethod
    def scored_sentence(self, answers: dict[str, Any]) -> str:
        """One sentence: how many answers were scored, by which rules."""

    @abstractmethod
    def breakdown(self, answers: dict[str, Any]) -> list[str]:
        """Markdown table lines of the per-type (or per-split) scores."""

    @abstractmethod
    def reference_text(self, source: Any) -> str:
        """The reference answer(s) of a question, as the report's samples show them."""

    def summary(self, answers: dict[str, Any]) -> dict[str, Any]:
        """The answer metrics ``ragvqa eval`` prints."""
        return {key: answers.get(key) for key in self.summary_keys}
