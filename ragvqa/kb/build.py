"""Build a KB directory: source pages -> documents -> parquet shards + manifest.

Flow: list the source files (a file, or a directory of parts in natural sort
order) -> stream pages from the source reader (``ragvqa.kb.sources.*``) ->
cut them into documents (``ragvqa.kb.split``) -> resolve each document's
image to a local file (``ragvqa.kb.images.ImageResolver``) -> number them
densely from 0 -> write shards of about ``shard_size`` documents (a shard
never splits a page) with ``ragvqa.kb.store``.

Resume: after each shard is renamed into place, ``manifest.json`` (status
``in_progress``) records the shard list, the counts and a checkpoint: which
source file and how many of its pages the shards cover. A rerun with the same
arguments skips those pages (``iter_pages(skip=...)``) and continues the
numbering, so a build killed at any moment (even SIGKILL) ends with shards
byte-identical to an uninterrupted build. A finished KB is left alone; a KB
made with different arguments is refused unless ``force`` is given.

Missing images are normal: the document keeps its ``image_ref`` with
``image_path`` None; every such reference is counted and listed in
``missing_images.jsonl`` (one line per distinct reference per shard).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import json
import logging
import platform
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.kb import store
from ragvqa.kb.files import atomic_path, atomic_write_bytes
from ragvqa.kb.layout import COMPLETE, IN_PROGRESS, MISSING_IMAGES, KBDir
from ragvqa.kb.sources.base import DEFAULT_PROTOCOL, FORMATS, KEEP_SHORT_FORMATS, source_for
from ragvqa.kb.split import PROTOCOLS, SplitConfig, split_page
from ragvqa.types import Document, ImageRef, Page

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 10_000
MANIFEST_VERSION = 1


# ---------------------------------------------------------------------------
# Source files and formats
# ---------------------------------------------------------------------------


def _natural_key(name: str) -> list:
    """Sort key that puts part2 before part10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _is_index_file(name: str) -> bool:
    # Multistream index files (offset:page_id:title) sit beside the dump parts;
    # the MediaWiki reader finds them itself.
    return "-index" in name.lower() or name.lower().startswith("index")


def format_from_name(path: Path) -> str | None:
    """The format a file name implies, or None."""
    name = path.name.lower()
    if _is_index_file(name):
        return None
    if name.endswith((".xml", ".xml.bz2")) or (".xml-p" in name and name.endswith(".bz2")):
        return "mediawiki"
    if "pages-articles" in name and name.endswith(".bz2"):
        return "mediawiki"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "wiki6m"
    if name.endswith(".json"):
        return "evqa-json"
    return None


def sniff_format(path: Path) -> str | None:
    """The format a file's first bytes imply (bz2 -> MediaWiki, '<' -> XML,
    one JSON object per line -> Wiki6M, or ReT-M2KR when it has ``passage_id``,
    a bare '{' -> E-VQA), or None."""
    import gzip

    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        if head.startswith(b"BZh"):
            return "mediawiki"
        if head.startswith(b"\x1f\x8b"):
            with gzip.open(path, "rb") as gz:
                head = gz.read(1 << 16)
    except (OSError, EOFError):
        return None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return "mediawiki"
    if text.startswith(b"{"):
        first, newline, _ = text.partition(b"\n")
        if newline:
            try:
                record = json.loads(first)
                if isinstance(record, dict):
                    return "ret-m2kr-jsonl" if "passage_id" in record else "wiki6m"
            except ValueError:
                pass
        return "evqa-json"
    return None


def detect_format(path: Path) -> str | None:
    """A file's format from its name, then its content.

    ``.jsonl`` names both Wiki6M and ReT-M2KR: only a first record with
    ``passage_id`` makes it ReT-M2KR (a first line longer than the sniffed
    head keeps the name's answer).
    """
    found = format_from_name(path)
    if found is None:
        return sniff_format(path)
    if found == "wiki6m" and sniff_format(path) == "ret-m2kr-jsonl":
        return "ret-m2kr-jsonl"
    return found


def list_sources(path: Path, fmt: str = "auto") -> tuple[list[Path], str]:
    """The source files under ``path`` and their format.

    Args:
        path: one file, or a directory whose files are the parts of one
            source (sorted naturally; multistream index files, hidden files
            and files of no known format are left out).
        fmt: ``"auto"`` or one of :data:`FORMATS`.

    Raises:
        InputError: missing path, unknown format, no source file, or a
            directory that mixes formats.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}", hint=f"use auto or one of: {', '.join(FORMATS)}")
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or directory", hint="check the --wiki path")
    if path.is_file():
        found = detect_format(path)
        if fmt == "auto":
            if found is None:
                raise InputError(
                    f"{path}: unknown source format",
                    hint=f"pass --format with one of: {', '.join(FORMATS)}",
                )
            fmt = found
        return [path.resolve()], fmt
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: _natural_key(p.name),
    )
    by_format: dict[str, list[Path]] = collections.defaultdict(list)
    for p in files:
        skip = _is_index_file(p.name) or p.suffix.lower() in {".txt", ".md", ".md5", ".sha1"}
        found = None if skip else detect_format(p)
        if found is not None:
            by_format[found].append(p.resolve())
    if fmt == "auto":
        if len(by_format) > 1:
            kinds = ", ".join(f"{k} ({len(v)} files)" for k, v in sorted(by_format.items()))
            raise InputError(f"{path} mixes source formats: {kinds}", hint="pass --format to pick one")
        if not by_format:
            raise InputError(
                f"{path}: no source file of a known format in this directory",
                hint="expected *.xml(.bz2), *.json or *.jsonl(.gz) files",
            )
        fmt = next(iter(by_format))
    chosen = by_format.get(fmt, [])
    if not chosen:
        raise InputError(f"{path}: no {fmt} source file in this directory", hint="check --wiki and --format")
    ignored = [p.name for p in files if p.resolve() not in chosen]
    if ignored:
        log.info("%s: ignoring %d files: %s", path, len(ignored), ", ".join(ignored[:10]))
    return chosen, fmt


# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides a KB's content (recorded as the manifest's config).

    Two builds with equal configs produce identical documents; a rerun with a
    different config over an existing KB dir is refused.

    Attributes:
        sources: absolute source file paths, in reading order.
        source_bytes: size of each source file (a changed file is refused).
        format: one of :data:`FORMATS`.
        split: protocol and section-dropping rules.
        images_root: the images directory, relative to the KB when inside
            it (so the KB can move), else absolute; or None.
        image_map: absolute image mapping file, or None.
        shard_size: a shard is closed at the first page end at or after this
            many documents.
        limit: read at most this many pages (after skips), or None.
        page_images: ``(page title, image ref)`` pairs: the image becomes the
            page's image and the lead section's first image.
        source_formats: the format of each source when they differ
            (``format`` is then ``"mixed"``); empty for one format.
    """

    sources: tuple[str, ...]
    source_bytes: tuple[int, ...]
    format: str
    split: SplitConfig
    images_root: str | None = None
    image_map: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    limit: int | None = None
    page_images: tuple[tuple[str, str], ...] = ()
    source_formats: tuple[str, ...] = ()

    def format_of(self, file_no: int) -> str:
        """The format of source ``file_no``."""
        return self.source_formats[file_no] if self.source_formats else self.format

    def as_dict(self) -> dict[str, Any]:
        extra = {"source_formats": list(self.source_formats)} if self.source_formats else {}
        return {
            **extra,
            "sources": list(self.sources),
            "source_bytes": list(self.source_bytes),
            "format": self.format,
            "split": self.split.as_dict(),
            "images_root": self.images_root,
            "image_map": self.image_map,
            "shard_size": self.shard_size,
            "limit": self.limit,
            "page_images": [list(p) for p in self.page_images],
        }


@dataclass
class BuildResult:
    """What :func:`build_kb` did.

    Attributes:
        kb_dir: the KB directory.
        action: ``"built"`` (from scratch), ``"resumed"`` or ``"up_to_date"``
            (a finished KB with the same config: nothing done).
        manifest: the final manifest.
        resumed_from_shard: first shard written by this run (resume only).
    """

    kb_dir: Path
    action: str
    manifest: dict[str, Any]
    resumed_from_shard: int = 0
    image_stats: dict[str, int] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("ragvqa", "pyarrow", "mwparserfromhell"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


SOURCE_COUNT_KEYS = ("pages_read", "skipped_redirect", "skipped_namespace", "skipped_empty", "skipped_malformed")


def summarise_counts(c: collections.Counter) -> dict[str, Any]:
    """The manifest's ``counts`` block from the raw counter."""
    return {
        "pages_read": c["pages_read"],
        "pages_used": c["pages_used"],
        "pages_skipped": {
            "redirect": c["skipped_redirect"],
            "other_namespace": c["skipped_namespace"],
            "empty": c["skipped_empty"],
            "malformed": c["skipped_malformed"],
        },
        "pages_without_documents": c["pages_without_documents"],
        "pages_with_given_image": c["pages_with_given_image"],
        "sections_read": c["sections_read"],
        "sections_dropped": {
            "non_content": c["sections_dropped_non_content"],
            "near_empty": c["sections_dropped_near_empty"],
        },
        "documents": c["documents"],
        "documents_with_section_image": c["documents_section_image"],
        "documents_with_page_image": c["documents_page_image"],
        "documents_text_only": c["documents_text_only"],
        "documents_with_local_image": c["documents_local_image"],
        "image_refs_missing": c["image_refs_missing"],
    }


def _restore_counter(raw: dict[str, int]) -> collections.Counter:
    return collections.Counter({k: int(v) for k, v in raw.items()})


def _prepare_out_dir(kb: KBDir, config: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """The existing manifest to resume or report on, or None for a fresh build.

    Raises KnowledgeBaseError for a KB made with other arguments (unless
    force, which deletes the KB's own files: manifest, documents, reports,
    embeddings, index) and for a directory that holds documents but no manifest.
    An unfinished build whose source files changed size (a truncated download
    that was fixed) cannot be resumed; it is started again without ``force``.
    """
    out = kb.root
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory", hint="pass a directory path")
    existing: dict[str, Any] | None = None
    if kb.exists():
        try:
            existing = kb.manifest
        except KnowledgeBaseError:
            existing = {"config": None, "status": "unreadable"}
    elif kb.documents_dir.exists() and not force:
        raise KnowledgeBaseError(
            f"{out} holds documents but no {kb.manifest_path.name}",
            hint="pass a new --out, or --force to rebuild it from scratch",
        )
    if existing is not None and _same_images_root(kb, existing.get("config"), config):
        existing["config"]["images_root"] = config["images_root"]  # recorded by an earlier version
    if existing is not None and existing.get("config") != config:
        differ = _config_diff(existing.get("config"), config)
        if existing.get("status") != COMPLETE and differ == "differs in: source_bytes":
            log.warning("%s: the source files changed since the unfinished build; starting it again", out)
        elif not force:
            raise KnowledgeBaseError(
                f"{out} already holds a KB built with different arguments ({differ})",
                hint="pass a new --out, or --force to delete it and rebuild",
            )
        existing = None
    if existing is None and (force or kb.exists()):
        kb.clear_all()
    return existing


def _same_images_root(kb: KBDir, old: Any, new: dict[str, Any]) -> bool:
    """Whether an earlier absolute ``images_root`` names the directory ``new`` names relatively."""
    if not isinstance(old, dict) or old.get("images_root") == new.get("images_root"):
        return False
    a, b = old.get("images_root"), new.get("images_root")
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return (kb.root / a).resolve() == (kb.root / b).resolve()


def _config_diff(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "its manifest has no readable config"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "differs in: " + ", ".join(keys)


class _Builder:
    """State of one build run (see :func:`build_kb`)."""

    def __init__(self, kb: KBDir, config: BuildConfig, workers: int, progress: bool) -> None:
        from ragvqa.kb.images import ImageResolver

        self.kb = kb
        self.config = config
        self.workers = workers
        self.progress = progress
        self.resolver = ImageResolver(
            kb.root / config.images_root if config.images_root else None,  # relative: inside the KB
            Path(config.image_map) if config.image_map else None,
        )
        self._cache: dict[str, str | None] = {}
        self.page_images = dict(config.page_images)
        self.counts: collections.Counter = collections.Counter()
        self.shards: list[dict[str, Any]] = []
        self.next_doc_id = 0
        self.manifest: dict[str, Any] = {}

    # -- images ---------------------------------------------------------------
    def resolve(self, ref: str, *, as_path: bool = False) -> str | None:
        """The local file of an image reference (relative to the images root) or None.

        ``as_path``: the source gave a path relative to its images folder
        (``ImageRef`` kind ``"path"``), looked up as that path only.
        """
        # Sections of a page share its fallback image: cache recent answers.
        key = ("path:" if as_path else "ref:") + ref
        if key in self._cache:
            return self._cache[key]
        rel = self.resolver.resolve_path(ref) if as_path else self.resolver.resolve(ref)
        if len(self._cache) >= 100_000:
            self._cache.clear()
        self._cache[key] = rel
        return rel

    def page_resolver(self, page: Page) -> Callable[[str], str | None]:
        """``ref -> local path`` for one page: its kind-``"path"`` refs are paths, the rest names/URLs."""
        images = [page.page_image] if page.page_image else []
        images += [i for section in page.sections for i in section.images]
        paths = {i.ref for i in images if i.kind == "path"}
        if not paths:
            return self.resolve
        return lambda ref: self.resolve(ref, as_path=ref in paths)

    # -- manifest -------------------------------------------------------------
    def write_manifest(self, status: str, checkpoint: dict[str, Any] | None) -> None:
        m = self.manifest
        m["status"] = status
        m["shards"] = self.shards
        m["counts"] = summarise_counts(self.counts)
        m["raw_counts"] = dict(sorted(self.counts.items()))
        if checkpoint is not None:
            m["checkpoint"] = checkpoint
        else:
            m.pop("checkpoint", None)
        self.kb.write_manifest(m)

    def new_manifest(self, provenance: list[dict[str, Any]]) -> None:
        c = self.config
        source: dict[str, Any] = {
            "paths": list(c.sources),
            "bytes": list(c.source_bytes),
            "total_bytes": sum(c.source_bytes),
        }
        if c.source_formats:
            source["formats"] = list(c.source_formats)
        if provenance:
            source["provenance"] = provenance
        self.manifest = {
            "manifest_version": MANIFEST_VERSION,
            "kind": "ragvqa-kb",
            "source": source,
            "format": c.format,
            "protocol": c.split.protocol,
            "config": c.as_dict(),
            "versions": _versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "images_root": c.images_root,
            "missing_images_report": MISSING_IMAGES,
        }

    # -- shards ---------------------------------------------------------------
    def flush(self, docs: list[Document], missing: dict[str, dict[str, Any]], pages: int) -> None:
        number = len(self.shards)
        name = self.kb.shard_name(number)
        lines = "".join(json.dumps(v, ensure_ascii=False, sort_keys=True) + "\n" for v in missing.values())
        atomic_write_bytes(self._missing_part(number), lines.encode())
        store.write_document_shard(self.kb.documents_dir / name, docs)
        self.shards.append(
            {
                "file": name,
                "rows": len(docs),
                "first_doc_id": docs[0].doc_id if docs else self.next_doc_id,
                "pages": pages,
                "missing_image_refs": len(missing),
            }
        )

    def _missing_part(self, number: int) -> Path:
        return self.kb.build_work_dir / f"missing-{number:05d}.jsonl"

    def finish(self) -> None:
        """Join the per-shard missing-image lists and mark the KB complete."""
        with atomic_path(self.kb.missing_images_path) as tmp, open(tmp, "wb") as fh:
            for number in range(len(self.shards)):
                with open(self._missing_part(number), "rb") as src:
                    shutil.copyfileobj(src, fh)
        self.manifest["completed"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.write_manifest(COMPLETE, None)
        shutil.rmtree(self.kb.build_work_dir, ignore_errors=True)

    # -- pages ----------------------------------------------------------------
    def give_page_image(self, page: Page) -> None:
        ref = self.page_images.get(page.title)
        if ref is None or not page.sections:
            return
        image = ImageRef(ref=ref, caption="", kind="given")
        page.page_image = image
        page.sections[0].images.insert(0, image)
        self.counts["pages_with_given_image"] += 1

    def documents(self, page: Page) -> list[Document]:
        """The page's documents with doc_ids, image paths and counts."""
        self.give_page_image(page)
        out = []
        resolve = self.page_resolver(page)
        for doc in split_page(page, self.config.split, self.counts, resolve):
            path = resolve(doc.image_ref) if doc.image_ref else None
            self.counts["documents"] += 1
            if doc.image_origin == "section":
                self.counts["documents_section_image"] += 1
            elif doc.image_origin == "page":
                self.counts["documents_page_image"] += 1
            else:
                self.counts["documents_text_only"] += 1
            if doc.image_ref is not None:
                self.counts["documents_local_image" if path else "image_refs_missing"] += 1
            out.append(
                Document(
                    doc_id=self.next_doc_id,
                    page_id=doc.page_id,
                    page_title=doc.page_title,
                    page_url=doc.page_url,
                    section_index=doc.section_index,
                    section_title=doc.section_title,
                    text=doc.text,
                    image_ref=doc.image_ref,
                    image_path=path,
                    image_origin=doc.image_origin,
                )
            )
            self.next_doc_id += 1
        if out:
            self.counts["pages_used"] += 1
        return out

    def run(self, checkpoint: dict[str, Any]) -> None:
        """Read the sources from ``checkpoint`` on, writing shards and checkpoints."""
        from tqdm.auto import tqdm

        c = self.config
        file_no = int(checkpoint["file_no"])
        pages_in_file = int(checkpoint["pages_in_file"])
        pages_total = int(checkpoint["pages_total"])
        # Source counts up to the start of the current file. Readers do not
        # count what skip= passes over, so a resumed file starts from the
        # counts the checkpoint saved for it.
        counts_before_file = _restore_counter(checkpoint["source_counts_before_file"])
        docs: list[Document] = []
        missing: dict[str, dict[str, Any]] = {}
        shard_pages = 0
        bar = tqdm(
            desc="build-kb",
            unit="page",
            initial=pages_total,
            total=c.limit,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            while file_no < len(c.sources):
                remaining = None if c.limit is None else c.limit - pages_total
                if remaining is not None and remaining <= 0:
                    break
                file_counts: collections.Counter = collections.Counter()
                skip = pages_in_file
                if skip:
                    file_counts.update(_restore_counter(checkpoint["source_counts_file"]))
                pages = source_for(c.format_of(file_no)).iter_pages(
                    Path(c.sources[file_no]),
                    counts=file_counts,
                    workers=self.workers,
                    limit=remaining,
                    skip=skip,
                )
                for page in pages:
                    new = self.documents(page)
                    pages_in_file += 1
                    pages_total += 1
                    shard_pages += 1
                    docs.extend(new)
                    for doc in new:
                        if doc.image_ref is not None and doc.image_path is None:
                            entry = missing.get(doc.image_ref)
                            if entry is None:
                                missing[doc.image_ref] = {
                                    "image_ref": doc.image_ref,
                                    "first_doc_id": doc.doc_id,
                                    "page_title": doc.page_title,
                                    "documents": 1,
                                }
                            else:
                                entry["documents"] += 1
                    bar.update(1)
                    if len(docs) >= c.shard_size:
                        self.flush(docs, missing, shard_pages)
                        self._checkpoint(file_no, pages_in_file, pages_total, counts_before_file, file_counts)
                        bar.set_postfix(docs=self.next_doc_id, shards=len(self.shards), refresh=False)
                        docs, missing, shard_pages = [], {}, 0
                # File done: its counts join the running total.
                counts_before_file = counts_before_file + file_counts
                file_no += 1
                pages_in_file = 0
                self._set_source_counts(counts_before_file)
            if docs:
                self.flush(docs, missing, shard_pages)
            self._set_source_counts(counts_before_file)
        finally:
            bar.close()

    def _set_source_counts(self, source_counts: collections.Counter) -> None:
        for key in SOURCE_COUNT_KEYS:
            self.counts[key] = source_counts[key]

    def _checkpoint(
        self,
        file_no: int,
        pages_in_file: int,
        pages_total: int,
        before_file: collections.Counter,
        file_counts: collections.Counter,
    ) -> None:
        self._set_source_counts(before_file + file_counts)
        self.write_manifest(
            IN_PROGRESS,
            {
                "file_no": file_no,
                "pages_in_file": pages_in_file,
                "pages_total": pages_total,
                "next_doc_id": self.next_doc_id,
                "source_counts_before_file": dict(before_file),
                "source_counts_file": dict(file_counts),
            },
        )


def _start_checkpoint() -> dict[str, Any]:
    return {
        "file_no": 0,
        "pages_in_file": 0,
        "pages_total": 0,
        "next_doc_id": 0,
        "source_counts_before_file": {},
        "source_counts_file": {},
    }


def build_kb(
    wiki: str | Path | Sequence[tuple[str | Path, str]],
    out: str | Path,
    *,
    images: str | Path | None = None,
    image_map: str | Path | None = None,
    fmt: str = "auto",
    protocol: str | None = None,
    workers: int = 1,
    limit: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    page_images: dict[str, str] | None = None,
    split: SplitConfig | None = None,
    force: bool = False,
    progress: bool = True,
    provenance: Sequence[dict[str, Any]] = (),
) -> BuildResult:
    """Build (or resume, or confirm) the documents stage of a KB directory.

    Args:
        wiki: a source file or a directory of source parts; or several
            sources in one KB, as ``[(path, format), ...]`` (each path a file
            or a directory; ``format`` may be ``"auto"``), read in that order.
        out: the KB directory (created).
        images: the images root (recorded relative to ``out`` when inside
            it, else absolute); None: every image reference counts as missing.
        image_map: optional mapping file for :class:`ImageResolver`.
        fmt: ``"auto"`` (from file names, then content) or one of :data:`FORMATS`.
        protocol: ``"sections"`` or ``"chunks"``; None: the format's default
            (sections for MediaWiki and E-VQA, chunks for Wiki6M).
        workers: passed to the source reader (parallel parsing where it has one).
        limit: read at most this many pages.
        shard_size: documents per shard (closed at a page end).
        page_images: page title -> image ref to give that page (the bundled
            sample attaches its photos this way).
        split: full split settings (overrides ``protocol``).
        force: delete a KB made with other arguments instead of refusing.
        progress: show a tqdm bar.
        provenance: where the sources come from and their licences, recorded
            in the manifest's ``source.provenance`` (not part of the config).

    Returns:
        BuildResult; ``manifest["counts"]`` holds the counts.

    Raises:
        InputError / DataError: bad arguments or unreadable source (one line);
        KnowledgeBaseError: ``out`` holds a KB built with other arguments.
    """
    files, fmt, formats = _gather_sources(wiki, fmt)
    if split is None:
        defaults = {DEFAULT_PROTOCOL[f] for f in (formats or (fmt,))}
        if protocol is None and len(defaults) > 1:
            raise InputError(
                f"the sources' formats ({', '.join(dict.fromkeys(formats))}) split differently by default",
                hint="pass --protocol sections or --protocol chunks",
            )
        protocol = protocol or defaults.pop()
        if protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol {protocol!r}", hint=f"use one of: {', '.join(PROTOCOLS)}")
        if all(f in KEEP_SHORT_FORMATS for f in formats or (fmt,)):
            split = SplitConfig(protocol=protocol, min_chars=0)
        else:
            split = SplitConfig(protocol=protocol)
    if shard_size < 1:
        raise InputError(f"shard size must be >= 1 (got {shard_size})")
    if limit is not None and limit < 0:
        raise InputError(f"--limit must be >= 0 (got {limit})")
    kb = KBDir(out)
    images_root = None
    if images is not None:
        root = Path(images).expanduser()
        if not root.is_dir():
            raise InputError(f"images directory {root} does not exist", hint="pass an existing directory to --images")
        images_root = kb.images_root_value(root)  # relative when inside the KB: it can move
    map_path = None
    if image_map is not None:
        map_file = Path(image_map).expanduser()
        if not map_file.is_file():
            raise InputError(f"image mapping file {map_file} does not exist", hint="check --image-map")
        map_path = str(map_file.resolve())
    config = BuildConfig(
        sources=tuple(str(p) for p in files),
        source_bytes=tuple(p.stat().st_size for p in files),
        format=fmt,
        split=split,
        images_root=images_root,
        image_map=map_path,
        shard_size=shard_size,
        limit=limit,
        page_images=tuple(sorted((page_images or {}).items())),
        source_formats=formats,
    )
    out = kb.root
    existing = _prepare_out_dir(kb, json.loads(json.dumps(config.as_dict())), force)
    if existing is not None and existing.get("status") == COMPLETE:
        return BuildResult(out, "up_to_date", existing)
    with kb.writing(rerun=kb.build_command):
        out.mkdir(parents=True, exist_ok=True)
        return _run_build(kb, config, existing, workers, progress, list(provenance))


def _gather_sources(wiki: Any, fmt: str) -> tuple[list[Path], str, tuple[str, ...]]:
    """(files, format, per-file formats when they differ) for one source or a list of (path, format)."""
    if isinstance(wiki, (str, Path)):
        one, found = list_sources(Path(wiki), fmt)
        return one, found, ()
    files: list[Path] = []
    formats: list[str] = []
    for item in wiki:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise InputError(f"a source list takes (path, format) pairs, got {item!r}")
        part_files, part_fmt = list_sources(Path(item[0]), item[1])
        files += part_files
        formats += [part_fmt] * len(part_files)
    if not files:
        raise InputError("no source given", hint="pass --wiki PATH")
    if len(set(formats)) == 1:
        return files, formats[0], ()
    return files, "mixed", tuple(formats)


def _run_build(
    kb: KBDir, config: BuildConfig, existing: dict[str, Any] | None, workers: int, progress: bool,
    provenance: list[dict[str, Any]],
) -> BuildResult:
    out = kb.root
    builder = _Builder(kb, config, workers, progress)
    if existing is not None and isinstance(existing.get("checkpoint"), dict):
        builder.manifest = existing
        builder.shards = list(existing.get("shards", []))
        builder.counts = _restore_counter(existing.get("raw_counts", {}))
        checkpoint = existing["checkpoint"]
        builder.next_doc_id = int(checkpoint["next_doc_id"])
        action = "resumed"
        log.info("resuming %s after shard %d (%d documents)", out, len(builder.shards), builder.next_doc_id)
    else:
        builder.new_manifest(provenance)
        checkpoint = _start_checkpoint()
        action = "built"
        for folder in (kb.documents_dir, kb.build_work_dir):
            shutil.rmtree(folder, ignore_errors=True)
        builder.write_manifest(IN_PROGRESS, checkpoint)
    first_shard = len(builder.shards)
    # Leftovers of a killed run: temp files, and shards written after the last checkpoint.
    _remove_stale(kb, first_shard)
    builder.run(checkpoint)
    builder.finish()
    return BuildResult(out, action, builder.manifest, first_shard, dict(builder.resolver.stats))


def _remove_stale(kb: KBDir, first_shard: int) -> None:
    for folder in (kb.documents_dir, kb.build_work_dir):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            number = re.search(r"(\d{5})\.(parquet|jsonl)$", p.name)
            if p.name.startswith(".") or (number and int(number.group(1)) >= first_shard):
                p.unlink(missing_ok=True)


def format_summary(result: BuildResult) -> str:
    """A short human summary of a build (what the CLI prints at the end)."""
    m = result.manifest
    c = m.get("counts", {})
    skipped = c.get("pages_skipped", {})
    dropped = c.get("sections_dropped", {})
    lines = []
    if result.action == "up_to_date":
        lines.append(f"{result.kb_dir}: already complete, nothing to do.")
    else:
        verb = "resumed and finished" if result.action == "resumed" else "built"
        lines.append(f"{result.kb_dir}: {verb} ({m.get('format')}, {m.get('protocol')} protocol).")
    lines.append(
        f"  pages: {c.get('pages_read', 0)} read, {c.get('pages_used', 0)} used; skipped "
        + ", ".join(f"{k} {v}" for k, v in skipped.items())
    )
    lines.append(
        f"  sections: {c.get('sections_read', 0)} read; dropped "
        + ", ".join(f"{k} {v}" for k, v in dropped.items())
    )
    lines.append(
        f"  documents: {c.get('documents', 0)} in {len(m.get('shards', []))} shards; "
        f"section image {c.get('documents_with_section_image', 0)}, "
        f"page image {c.get('documents_with_page_image', 0)}, "
        f"text-only {c.get('documents_text_only', 0)}"
    )
    root = m.get("images_root")
    lines.append(
        f"  images: {c.get('documents_with_local_image', 0)} documents with a local file, "
        f"{c.get('image_refs_missing', 0)} references without one"
        + (f" (listed in {KBDir(result.kb_dir).missing_images_path})" if c.get("image_refs_missing") else "")
        + ("" if root else "; no --images given")
    )
    if not c.get("documents"):
        lines.append("  warning: no documents were produced; check --wiki, --format and the skip counts above")
    return "\n".join(lines)


__all__: list[str] = [
    "FORMATS",
    "BuildConfig",
    "BuildResult",
    "build_kb",
    "format_summary",
    "list_sources",
]
