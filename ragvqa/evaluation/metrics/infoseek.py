"""InfoSeek accuracy, exactly as the official ``infoseek_eval.py`` computes it.

Inputs are the official files: predictions JSONL ``{"data_id", "prediction"}``,
references JSONL (``infoseek_val.jsonl``: ``data_id``, ``answer_eval``,
``data_split``, ...) and question types JSONL (``{"data_id",
"question_type"}``). Rules (reference: shared/reference/metrics.md):

- a prediction whose ``data_id`` is not in the references is ignored (and
  counted here as ``unknown_prediction_ids``); a reference without a
  prediction does NOT enter the denominator (counted as
  ``missing_predictions``);
- split: ``data_split`` ending in ``unseen_question`` -> unseen question,
  anything else -> unseen entity;
- ``Time`` and ``String``: the normalised prediction equals any normalised
  ``answer_eval`` entry; ``Numerical``: the parsed number/range against
  ``answer_eval[0]["range"]``;
- per split: ``round(100 * correct / n, 2)`` over the three types pooled, and
  per type; final: ``round(harmonic_mean(rounded split scores), 2)`` with a
  zero replaced by 1e-12.

Deviation from the official script only where it would crash: a reference
with no question type, no split, or an empty/malformed ``answer_eval`` is
skipped and counted instead of raising. A question type other than
String/Numerical/Time is scored as String, as the official script does, and
counted (``unknown_question_type``).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# The official number pattern: optional sign, optional leading dot, digits,
# thousands groups, an optional decimal part, an optional exponent.
_NUMBER = re.compile(r"[-+]?[.]?[\d]+(?:,\d\d\d)*[\.]?\d*(?:[eE][-+]?\d+)?")
IOU_THRESHOLD = 0.5 - 1e-12
_EPS = 1e-12
SPLITS = ("unseen_question", "unseen_entity")
QUESTION_TYPES = ("String", "Numerical", "Time")


def normalize_answer(text: str) -> str:
    """lower-case; delete ``string.punctuation``; ``\\b(a|an|the)\\b`` -> space; collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def string_match(prediction: str, answers: Sequence[str]) -> bool:
    """True if the normalised prediction equals any normalised answer (String and Time)."""
    if not answers:
        raise ValueError("no reference answers")
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(str(a)) for a in answers)


def clean_range_text(text: str) -> str:
    """Every ``-`` directly after a digit becomes `` - `` ("120-170" -> "120 - 170")."""
    return "".join(
        " - " if ch == "-" and i >= 1 and text[i - 1].isdigit() else ch for i, ch in enumerate(text)
    )


def parse_numerical(text: str) -> float | list[float]:
    """Parse a numerical prediction into one number or a range ``[low, high]``.

    1. :func:`clean_range_text`; 2. find the numbers; 3. drop commas, strip
    dots at both ends, keep what is before the first ``.`` when more than one
    is left; 4. first two numbers a <= b -> ``[a, b]``; a > b -> ``a``; one
    number -> it; none -> ``[0, 0]`` (a range, as in the official script).

    Examples: "120-170." -> [120.0, 170.0]; "1,897 m" -> 1897.0;
    "between 130 and 80" -> 130.0; "1.5e3" -> 1500.0; "-3 to -1" -> [-3.0, -1.0].
    """
    found = _NUMBER.findall(clean_range_text(text))
    numbers: list[float] = []
    for raw in found:
        raw = raw.replace(",", "").strip(".")
        if raw.count(".") > 1:
            raw = raw.split(".")[0]
        numbers.append(float(raw))
    numbers = numbers[:2]
    if len(numbers) == 2:
        first, second = numbers
        return [first, second] if first <= second else first
    if len(numbers) == 1:
        return numbers[0]
    return [0.0, 0.0]


def range_iou(x: Sequence[float], y: Sequence[float]) -> float:
    """IoU of two closed ranges; each length gets 1e-12 added (official formula)."""
    min_1, max_1 = min(x), max(x)
    min_2, max_2 = min(y), max(y)
    overlap = max(0.0, min(max_1, max_2) - max(min_1, min_2))
    len_x = (max_1 - min_1) + _EPS
    len_y = (max_2 - min_2) + _EPS
    denom = len_x + len_y - overlap
    return overlap / denom if denom != 0 else 0.0


def numerical_match(prediction: float | Sequence[float], answer_range: Sequence[float]) -> bool:
    """A parsed prediction against the reference range ``[low, high]`` (inclusive).

    A single number is correct inside the range; a range is correct when both
    ends lie inside, or when its IoU with the reference is >= 0.5 - 1e-12.
    """
    low, high = answer_range[0], answer_range[1]
    if isinstance(prediction, (int, float)):
        return low <= prediction <= high
    if low <= prediction[0] <= high and low <= prediction[1] <= high:
        return True
    return range_iou(prediction, answer_range) >= IOU_THRESHOLD


def reference_range(answer_eval: Any) -> list[float]:
    """``answer_eval`` of a Numerical question -> ``[low, high]`` floats.

    Accepts the list form ``[{"wikidata": v, "range": [lo, hi]}]`` and a bare
    dict, as the official script does. Raises ValueError when malformed.
    """
    entry = answer_eval[0] if isinstance(answer_eval, list) and answer_eval else answer_eval
    if not isinstance(entry, dict) or "range" not in entry:
        raise ValueError(f"numerical answer_eval has no range: {answer_eval!r}")
    values = [float(str(v)) for v in list(entry["range"])[:2]]
    if len(values) != 2:
        raise ValueError(f"numerical range needs two numbers: {entry['range']!r}")
    return values


@dataclass(frozen=True)
class InfoSeekReference:
    """One reference question, ready to score.

    Attributes:
        data_id: the question id.
        question_type: as given (``String``/``Numerical``/``Time``, any case).
        split: ``unseen_question`` or ``unseen_entity``.
        answers: accepted strings (String/Time).
        answer_range: ``[low, high]`` (Numerical), else None.
        wikidata: the Numerical question's wikidata value, else None.
        raw: the original reference row.
    """

    data_id: str
    question_type: str
    split: str
    answers: tuple[str, ...] = ()
    answer_range: tuple[float, float] | None = None
    wikidata: Any = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def kind(self) -> str:
        """``time``, ``numerical`` or ``string`` (anything else scores as string, officially)."""
        qtype = self.question_type.lower()
        return qtype if qtype in ("time", "numerical") else "string"


def split_of(data_split: str) -> str:
    """The official split rule: ends with ``unseen_question`` or else unseen entity."""
    return "unseen_question" if data_split.endswith("unseen_question") else "unseen_entity"


def prepare_references(
    references: Iterable[dict], qtypes: Iterable[dict], counts: Counter | None = None
) -> dict[str, InfoSeekReference]:
    """Join reference rows with their question types.

    Rows that cannot be scored are skipped and counted in ``counts``:
    ``reference_without_qtype``, ``reference_without_split``,
    ``empty_reference`` (no accepted answer), ``malformed_reference``
    (no text ``data_id``, or a Numerical row without a usable range);
    ``malformed_qtype_rows`` counts type rows without text ``data_id`` and
    ``question_type``. ``unknown_question_type``
    counts types outside String/Numerical/Time (scored as String).
    """
    counts = counts if counts is not None else Counter()
    qid2type: dict[str, str] = {}
    for row in qtypes:
        data_id, qtype = row.get("data_id"), row.get("question_type")
        if not isinstance(data_id, str) or not isinstance(qtype, str):
            counts["malformed_qtype_rows"] += 1  # the official script would crash here
            continue
        qid2type[data_id] = qtype
    out: dict[str, InfoSeekReference] = {}
    for row in references:
        data_id = row.get("data_id")
        counts["references"] += 1
        if not isinstance(data_id, str):
            counts["malformed_reference"] += 1
            continue
        qtype = qid2type.get(data_id)
        if qtype is None:
            counts["reference_without_qtype"] += 1
            continue
        if not isinstance(row.get("data_split"), str):
            counts["reference_without_split"] += 1
            continue
        if qtype.lower() not in ("string", "numerical", "time"):
            counts["unknown_question_type"] += 1
        split = split_of(row["data_split"])
        answer_eval = row.get("answer_eval")
        if qtype.lower() == "numerical":
            try:
                low, high = reference_range(answer_eval)
            except (ValueError, TypeError, KeyError, IndexError):
                counts["malformed_reference"] += 1
                continue
            # reference_range succeeded, so this entry is a dict with a range.
            first = answer_eval[0] if isinstance(answer_eval, list) else answer_eval
            assert isinstance(first, dict)
            out[data_id] = InfoSeekReference(
                data_id,
                qtype,
                split,
                answer_range=(low, high),
                wikidata=first.get("wikidata"),
                raw=row,
            )
        else:
            if not isinstance(answer_eval, list) or not answer_eval:
                counts["empty_reference"] += 1
                continue
            out[data_id] = InfoSeekReference(
                data_id, qtype, split, answers=tuple(str(a) for a in answer_eval), raw=row
            )
    return out


def score_prediction(prediction: str, reference: InfoSeekReference) -> bool:
    """Whether one prediction is correct for its reference."""
    if reference.kind == "numerical":
        assert reference.answer_range is not None
        return numerical_match(parse_numerical(prediction), reference.answer_range)
    return string_match(prediction, reference.answers)


def harmonic_mean(*values: float) -> float:
    """Harmonic mean with each zero replaced by 1e-12 (official)."""
    safe = [v if v != 0 else 1e-12 for v in values]
    return len(safe) / sum(1.0 / v for v in safe)


def _ratio(correct: int, n: int) -> float:
    return correct / n if n != 0 else 0


def _split_score(outcomes: list[tuple[str, bool]]) -> dict[str, float]:
    """The official per-split dict from (kind, correct) outcomes."""
    by_kind = {
        kind: [ok for k, ok in outcomes if k == kind] for kind in ("time", "numerical", "string")
    }
    # The official script pools the lists in the order time + quantity + entity;
    # the order does not change sum/len, the arithmetic below is the same.
    total = sum(ok for _, ok in outcomes)
    return {
        "score": round(_ratio(total, len(outcomes)) * 100, 2),
        "score_time": round(_ratio(sum(by_kind["time"]), len(by_kind["time"])) * 100, 2),
        "score_num": round(_ratio(sum(by_kind["numerical"]), len(by_kind["numerical"])) * 100, 2),
        "score_string": round(_ratio(sum(by_kind["string"]), len(by_kind["string"])) * 100, 2),
    }


@dataclass
class InfoSeekResult:
    """Official scores plus counts and per-question outcomes."""

    scores: dict[str, Any]
    counts: Counter
    per_question: list[dict[str, Any]]

    def metrics(self) -> dict[str, Any]:
        """The official keys (``final_score``, ``unseen_question_score``,
        ``unseen_entity_score``) plus ``counts`` and ``n_by_split``."""
        out = dict(self.scores)
        out["counts"] = dict(sorted(self.counts.items()))
        return out


def score_infoseek(
    predictions: Iterable[dict], references: dict[str, InfoSeekReference]
) -> InfoSeekResult:
    """Score predictions with the official rules.

    Args:
        predictions: rows ``{"data_id", "prediction"}``; every row counts,
            duplicates included (as in the official script; counted as
            ``duplicate_predictions``). A row whose ``data_id`` or
            ``prediction`` is not text is not scored (``invalid_predictions``).
        references: from :func:`prepare_references`.
    Returns:
        official scores, counts (``matched_predictions``,
        ``unknown_prediction_ids``, ``missing_predictions`` and per split
        ``n_unseen_question`` / ``n_unseen_entity``), per-question outcomes.
    """
    counts: Counter = Counter()
    outcomes: dict[str, list[tuple[str, bool]]] = {s: [] for s in SPLITS}
    per_question: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in predictions:
        data_id = row.get("data_id")
        prediction = row.get("prediction")
        if not isinstance(data_id, str) or not isinstance(prediction, str):
            # The official script would crash on these (it calls str methods);
            # a list is NOT stringified and scored: "['Spain']" would match "Spain".
            counts["invalid_predictions"] += 1
            continue
        reference = references.get(data_id)
        if reference is None:
            counts["unknown_prediction_ids"] += 1
            continue
        if data_id in seen:
            counts["duplicate_predictions"] += 1
        seen.add(data_id)
        ok = score_prediction(prediction, reference)
        outcomes[reference.split].append((reference.kind, ok))
        counts["matched_predictions"] += 1
        per_question.append(
            {
                "data_id": data_id,
                "split": reference.split,
                "question_type": reference.question_type,
                "prediction": prediction,
                "correct": bool(ok),
            }
        )
    counts["missing_predictions"] = sum(1 for qid in references if qid not in seen)
    split_scores = {s: _split_score(outcomes[s]) for s in SPLITS}
    for s in SPLITS:
        counts[f"n_{s}"] = len(outcomes[s])
    scores = {
        "final_score": round(
            harmonic_mean(
                split_scores["unseen_question"]["score"], split_scores["unseen_entity"]["score"]
            ),
            2,
        ),
        "unseen_question_score": split_scores["unseen_question"],
        "unseen_entity_score": split_scores["unseen_entity"],
    }
    return InfoSeekResult(scores=scores, counts=counts, per_question=per_question)
