"""Readers for the evaluation sets in their official formats.

- Encyclopedic-VQA: ``test.csv`` (or train/val), one row per question, parsed
  by column name; a question is identified by its 0-based data row
  (``question_id``). Images: ``dataset_image_ids`` (first of the ``|``-joined
  ids); Google Landmarks v2 ids live at ``{root}/{id[0]}/{id[1]}/{id[2]}/{id}.jpg``,
  iNaturalist 2021 ids map to files through the dataset's id-to-file JSON
  (``--inat-map``); a flat ``{root}/{id}.jpg`` is accepted for both.
- InfoSeek: ``infoseek_{split}.jsonl`` (optionally ``*_withkb.jsonl`` with
  ``entity_id`` / ``entity_text``) plus ``infoseek_{split}_qtype.jsonl``.
  Images: ``{root}/{image_id}.jpg`` (or ``.JPEG``, ``.jpeg``, ``.png``).

Paths built from data never escape their root.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ragvqa.errors import DataError, InputError

EVQA_REQUIRED_COLUMNS = ("question", "answer", "question_type")
IMAGE_SUFFIXES = (".jpg", ".JPEG", ".jpeg", ".JPG", ".png", ".PNG")


def _decode_line(path: Path, lineno: int, raw: bytes) -> str:
    """One line as UTF-8 text (a BOM on the first line is dropped); DataError naming the byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}:{lineno} is not valid UTF-8 (byte {exc.start + 1} of the line)",
            hint="write the file as UTF-8",
        ) from None
    return text[1:] if lineno == 1 and text.startswith("\ufeff") else text


def _first_invalid_utf8(path: Path) -> str:
    """Where a file stops being UTF-8, as "line L, byte B" (1-based; the error path only)."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {lineno}, byte {exc.start + 1}"
    return "a truncated character at the end"


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with every failure as a one-line DataError naming ``where``.

    Nesting deeper than Python's recursion limit (about 1,000 levels) is
    refused with the same error instead of a RecursionError.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where} is not valid JSON ({exc.msg})", hint="fix or remove it") from None
    except RecursionError:
        raise DataError(
            f"{where} is JSON nested too deeply to read", hint="fix or remove it"
        ) from None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a line that is not UTF-8 JSON object is a DataError naming the line.

    Blank lines are skipped. Scores depend on every row, so a bad row is an
    error, not a silent skip.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist", hint="check the path")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = _decode_line(path, lineno, raw)
            if not line.strip():
                continue
            row = parse_json(line, f"{path}:{lineno}")
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}:{lineno} is not a JSON object",
                    hint="each line must be one JSON object",
                )
            yield row


def page_key_from_url(url: str) -> str:
    """A page key from a Wikipedia URL or title: the title part, URL-decoded,
    spaces as underscores, first letter upper-cased (MediaWiki titles are
    case-sensitive except for the first letter)."""
    text = url.strip()
    if "/wiki/" in text:
        text = text.split("/wiki/", 1)[1]
    text = unquote(text).split("#", 1)[0].strip().replace(" ", "_")
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------ E-VQA


@dataclass(frozen=True)
class EVQAQuestion:
    """One E-VQA row.

    Attributes:
        question_id: 0-based data row in the CSV.
        question, answer, question_type: the CSV fields.
        image_id: first id of ``dataset_image_ids`` ("" if none).
        dataset_name: ``inaturalist`` | ``landmarks`` (or "").
        wikipedia_urls: ``wikipedia_url`` split on ``|`` (two for ``2_hop``).
        raw: the whole row.
    """

    question_id: int
    question: str
    answer: str
    question_type: str
    image_id: str
    dataset_name: str
    wikipedia_urls: tuple[str, ...]
    raw: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def positive_keys(self) -> set[str]:
        """Retrieval positives: the page of the (first, for 2_hop) wikipedia_url."""
        return (
            {page_key_from_url(self.wikipedia_urls[0])}
            if self.wikipedia_urls and self.wikipedia_urls[0]
            else set()
        )

    @property
    def answers(self) -> list[str]:
        """Answer strings for pseudo-recall: every ``|`` alternative; for
        multi_answer each ``&&`` item (our reading: one item found counts)."""
        out = []
        for ref in self.answer.split("|"):
            out.extend(ref.split("&&") if self.question_type == "multi_answer" else [ref])
        return [a for a in out if a.strip()]


def load_evqa(path: str | Path, *, limit: int | None = None) -> list[EVQAQuestion]:
    """Read an E-VQA CSV by column name.

    Raises:
        InputError: missing file; DataError: a required column is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist", hint="pass the E-VQA test.csv")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # evidence cells can be long
    out: list[EVQAQuestion] = []
    row_no = -1
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in EVQA_REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{path} lacks the column(s) {missing}", hint="pass an E-VQA CSV (test.csv)"
                )
            for row_no, row in enumerate(reader):
                if limit is not None and row_no >= limit:
                    break
                ids = (row.get("dataset_image_ids") or "").split("|")
                urls = tuple(
                    u.strip() for u in (row.get("wikipedia_url") or "").split("|") if u.strip()
                )
                out.append(
                    EVQAQuestion(
                        question_id=row_no,
                        question=row.get("question") or "",
                        answer=row.get("answer") or "",
                        question_type=(row.get("question_type") or "").strip(),
                        image_id=ids[0].strip(),
                        dataset_name=(row.get("dataset_name") or "").strip(),
                        wikipedia_urls=urls,
                        raw=dict(row),
                    )
                )
    except UnicodeDecodeError:
        raise DataError(
            f"{path} is not valid UTF-8 ({_first_invalid_utf8(path)})",
            hint="write the CSV as UTF-8",
        ) from None
    except csv.Error as exc:
        raise DataError(
            f"{path} is not a readable CSV after data row {row_no + 1} ({exc})",
            hint="pass an E-VQA CSV (test.csv)",
        ) from None
    return out


def _inside(root: Path, candidate: Path) -> Path | None:
    root = root.resolve()
    path = candidate.resolve()
    if path != root and root not in path.parents:
        return None
    return path


def _safe_id(image_id: str) -> bool:
    return (
        bool(image_id)
        and "/" not in image_id
        and "\\" not in image_id
        and image_id not in (".", "..")
    )


def evqa_image_path(
    q: EVQAQuestion, root: Path, inat_map: dict[str, str] | None = None
) -> Path | None:
    """The local image of an E-VQA question, or None when there is none on disk."""
    image_id = q.image_id
    if not _safe_id(image_id):
        return None
    candidates: list[Path] = []
    if inat_map and image_id in inat_map:
        candidates.append(root / inat_map[image_id])
    if len(image_id) >= 3:
        candidates.append(root / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg")
    candidates.extend(root / f"{image_id}{suffix}" for suffix in IMAGE_SUFFIXES)
    for cand in candidates:
        safe = _inside(root, cand)
        if safe is not None and safe.is_file():
            return safe
    return None


def load_inat_map(path: str | Path) -> dict[str, str]:
    """An iNaturalist id -> relative file JSON: ``{id: file}`` or a list of
    ``{"id", "file_name"}`` (``file`` also accepted).

    Raises:
        InputError: the file does not exist; DataError: not UTF-8 JSON of one
        of those two shapes (the message names the first bad entry).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--inat-map {path} does not exist", hint="check the path")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid UTF-8 (byte {exc.start + 1})", hint="write the file as UTF-8"
        ) from None
    data = parse_json(text, str(path))
    shape = 'a JSON object {id: relative_path} or a list of {"id", "file_name"}'
    out: dict[str, str] = {}
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list):
        pairs = []
        for i, entry in enumerate(data):
            file = entry.get("file_name", entry.get("file")) if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or "id" not in entry or file is None:
                raise DataError(
                    f'{path}: entry {i} is not an object with "id" and "file_name"',
                    hint=f"pass {shape}",
                )
            pairs.append((entry["id"], file))
    else:
        raise DataError(f"{path} is not an id -> file mapping", hint=f"pass {shape}")
    for key, file in pairs:
        # Ids are numbers or text; a file is a relative path (text).
        if isinstance(key, bool) or not isinstance(key, (str, int)) or not isinstance(file, str):
            raise DataError(
                f"{path}: the entry for id {str(key)[:40]!r} is not text -> text", hint=f"pass {shape}"
            )
        out[str(key)] = file
    return out


# ------------------------------------------------------------------ InfoSeek


@dataclass(frozen=True)
class InfoSeekQuestion:
    """One InfoSeek row joined with its question type (None when the qtype file lacks it)."""

    data_id: str
    image_id: str
    question: str
    answer: tuple[str, ...]
    answer_eval: Any
    data_split: str
    question_type: str | None
    entity_id: str | None = None
    entity_text: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def positive_keys(self) -> set[str]:
        """Retrieval positives: the entity, as id (Wiki6M page ids are Wikidata
        ids) and as title; empty without ``*_withkb`` fields."""
        keys = set()
        if self.entity_id:
            keys.add(f"id:{self.entity_id}")
        if self.entity_text:
            keys.add(f"title:{page_key_from_url(self.entity_text)}")
        return keys

    @property
    def answers(self) -> list[str]:
        """Answer strings for pseudo-recall: ``answer_eval`` strings, or for a
        numerical question the string of its wikidata value (an integral
        float written without ``.0``, as text writes it)."""
        out: list[str] = []
        entries = self.answer_eval if isinstance(self.answer_eval, list) else [self.answer_eval]
        for entry in entries:
            if isinstance(entry, dict):
                value = entry.get("wikidata")
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                if value is not None:
                    out.append(str(value))
            elif entry is not None:
                out.append(str(entry))
        return [a for a in out if a.strip()]


def load_infoseek(
    path: str | Path, qtypes_path: str | Path | None = None, *, limit: int | None = None
) -> list[InfoSeekQuestion]:
    """Read InfoSeek questions (first ``limit`` rows) and join the question types."""
    qtypes: dict[str, str] = {}
    if qtypes_path is not None:
        for row in read_jsonl(qtypes_path):
            qtypes[str(row.get("data_id"))] = str(row.get("question_type"))
    out: list[InfoSeekQuestion] = []
    for i, row in enumerate(read_jsonl(path)):
        if limit is not None and i >= limit:
            break
        data_id = str(row.get("data_id", ""))
        answer = row.get("answer") or []
        out.append(
            InfoSeekQuestion(
                data_id=data_id,
                image_id=str(row.get("image_id", "")),
                question=str(row.get("question", "")),
                answer=tuple(str(a) for a in (answer if isinstance(answer, list) else [answer])),
                answer_eval=row.get("answer_eval"),
                data_split=str(row.get("data_split", "")),
                question_type=qtypes.get(data_id, row.get("question_type")),
                entity_id=row.get("entity_id"),
                entity_text=row.get("entity_text"),
                raw=row,
            )
        )
    return out


def infoseek_image_path(q: InfoSeekQuestion, root: Path) -> Path | None:
    """``{root}/{image_id}.jpg`` (or .JPEG/.jpeg/.png), or None."""
    if not _safe_id(q.image_id):
        return None
    for suffix in IMAGE_SUFFIXES:
        safe = _inside(root, root / f"{q.image_id}{suffix}")
        if safe is not None and safe.is_file():
            return safe
    return None
