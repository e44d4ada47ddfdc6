"""Download the images a knowledge base references but has no local file for.

:func:`fetch_images` reads a finished KB (``ragvqa.kb.store``), collects the
distinct ``image_ref`` values of documents whose ``image_path`` is empty, and
downloads each into ``out_dir`` in Wikimedia's hashed layout
(``{h[0]}/{h[0:2]}/{Name}``, see :func:`ragvqa.kb.images.wikimedia_relpath`),
so a later ``ragvqa build-kb --images OUT_DIR`` (or
:func:`ragvqa.kb.image_paths.update_kb_image_paths`) finds them.

Politeness and robustness (Wikimedia's User-Agent and robot policies):

- a descriptive User-Agent: ``ragvqa/VERSION (CONTACT) httpx/VERSION``;
- a global rate limit (requests per second over all workers) and bounded
  concurrency (threads sharing one ``httpx.Client``);
- retries with exponential backoff and jitter on 429, 5xx, timeouts and
  connection errors; ``Retry-After`` is honoured, and a 429 pauses every
  worker, not just the one that got it;
- a size cap, streamed to a temp file, sha256 computed while streaming, the
  content decoded with Pillow before it is kept, then renamed into place
  (atomic: a killed run never leaves a half file under a final name).

State lives in ``OUT_DIR/_ragvqa_fetch/``: ``ledger.jsonl`` (one line per
stored file: ref, url, path, sha256, bytes, format, size; append-only, so an
interrupted run loses nothing), ``failures.jsonl`` (refs still missing after
the last run: ref, url, status, error, attempts, permanent) and
``report.json`` (counts, config, status). A rerun skips files present in the
ledger with the recorded size, and does not re-request permanent failures
(404/410, not an image, too large) unless asked to.
"""

from __future__ import annotations

import collections
import email.utils
import hashlib
import json
import logging
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ragvqa import __version__
from ragvqa.errors import InputError
from ragvqa.kb.files import atomic_write_json, iter_jsonl, sha256_file
from ragvqa.kb.images import commons_url, wikimedia_relpath
from ragvqa.kb.layout import KBDir, as_kb_dir
from ragvqa.kb.store import KnowledgeBase

log = logging.getLogger(__name__)

STATE_DIR = "_ragvqa_fetch"
LEDGER = "ledger.jsonl"
FAILURES = "failures.jsonl"
REPORT = "report.json"
PARTIAL = "partial"
RETRY_STATUS = {408, 425, 429} | set(range(500, 600)) - {501, 505}  # 501/505 will not change
PERMANENT_STATUS = {404, 410}
# File types Wikimedia hosts that are not images (no decodable picture).
NON_IMAGE_EXT = {
    ".ogg", ".oga", ".ogv", ".opus", ".webm", ".mp3", ".wav", ".flac", ".mid", ".midi",
    ".mpg", ".mpeg", ".pdf", ".djvu", ".stl",
}
_HASHED_PATH = re.compile(r"^(?P<head>.*)/(?P<h1>[0-9a-f])/(?P<h2>[0-9a-f]{2})/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class FetchConfig:
    """Settings of an image download run.

    Attributes:
        concurrency: worker threads (simultaneous requests).
        rate_limit: requests per second over all workers (0 = unlimited).
        retries: extra attempts after the first, on 429/5xx/timeouts.
        backoff_base_s, backoff_max_s: backoff before retry n is
            ``min(max, base * 2**n)`` seconds, jittered to 50-100 %.
        max_retry_after_s: a ``Retry-After`` longer than this gives up the ref.
        timeout_s: connect/read timeout of one request, seconds; a whole
            download may take at most ``4 * timeout_s``.
        max_bytes: files larger than this are refused (counted as failures).
        base_url: replaces scheme and host of every URL (a mirror, or a test
            server), e.g. ``http://127.0.0.1:8000`` or ``https://mirror/prefix``.
        contact: a URL or e-mail address put in the User-Agent (Wikimedia asks
            for one).
        thumb_width: SVG files are fetched as Wikimedia's rendered PNG
            thumbnail of this width (pixels); the file keeps the SVG's name.
        retry_failed: also re-request refs that failed permanently before.
        verify_existing: recompute sha256 of files already in the ledger
            instead of trusting their size.
        limit: fetch at most this many refs in this run (None: all).
    """

    concurrency: int = 4
    rate_limit: float = 4.0
    retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 600.0
    timeout_s: float = 30.0
    max_bytes: int = 50 * 1024 * 1024
    base_url: str | None = None
    contact: str | None = None
    thumb_width: int = 1024
    retry_failed: bool = False
    verify_existing: bool = False
    limit: int | None = None

    def user_agent(self) -> str:
        """The User-Agent header: project, version, contact, library."""
        import httpx

        contact = self.contact or "no contact given; see the ragvqa fetch-images --contact option"
        return f"ragvqa/{__version__} (knowledge-base image fetcher; {contact}) httpx/{httpx.__version__}"


@dataclass
class FetchResult:
    """Outcome of one ref: ``ok`` with the stored file's facts, or an error."""

    ref: str
    url: str = ""
    path: str = ""
    ok: bool = False
    status: int | None = None
    error: str = ""
    permanent: bool = False
    attempts: int = 0
    sha256: str = ""
    bytes: int = 0
    format: str = ""
    width: int = 0
    height: int = 0
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class RateLimiter:
    """Spaces requests ``1/rate`` seconds apart over all threads; can pause everyone."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._stop = stop

    def wait(self) -> bool:
        """Block until this thread may send; False if the run is stopping."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        return not self._stop.wait(slot - now) if slot > now else not self._stop.is_set()

    def pause(self, seconds: float) -> None:
        """No request from any thread for ``seconds`` (a 429 with Retry-After)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def rewrite_base(url: str, base_url: str | None) -> str:
    """Replace scheme and host of ``url`` by ``base_url`` (whose path is prefixed)."""
    if not base_url:
        return url
    src = urlsplit(url)
    base = urlsplit(base_url.rstrip("/"))
    return urlunsplit((base.scheme, base.netloc, base.path + src.path, src.query, ""))


def source_url(ref: str, config: FetchConfig) -> str:
    """The URL to download a ref from.

    URLs are used as given (``//host/...`` gets ``https:``); names become their
    Commons URL. SVGs become the rendered PNG thumbnail ``thumb_width`` wide.
    ``config.base_url`` then rewrites the host.
    """
    ref = ref.strip()
    if ref.lower().startswith(("http://", "https://")):
        url = ref
    elif ref.startswith("//"):
        url = "https:" + ref
    else:
        url = commons_url(ref)
    parts = urlsplit(url)
    match = _HASHED_PATH.match(parts.path)
    if match and match["name"].lower().endswith(".svg") and "/thumb/" not in parts.path:
        thumb = f"{match['head']}/thumb/{match['h1']}/{match['h2']}/{match['name']}/{config.thumb_width}px-{match['name']}.png"
        url = urlunsplit((parts.scheme, parts.netloc, thumb, "", ""))
    return rewrite_base(url, config.base_url)


def verify_image(path: Path) -> tuple[str, int, int]:
    """Decode an image file fully (at reduced scale for JPEG) -> (format, width, height).

    Raises:
        ValueError: not a decodable image (message says why).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt, size = im.format or "", im.size
            im.draft("RGB", (512, 512))  # JPEG: DCT-scaled decode, still reads every byte
            im.load()
    except UnidentifiedImageError:
        raise ValueError("not an image (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"broken image ({exc})") from None
    return fmt, size[0], size[1]


class _Fetcher:
    """One run's shared state: HTTP client, limiter, stop flag, directories."""

    def __init__(self, out_dir: Path, config: FetchConfig, stop: threading.Event) -> None:
        import httpx

        self.out_dir = out_dir
        self.partial_dir = out_dir / STATE_DIR / PARTIAL
        self.config = config
        self.stop = stop
        self.limiter = RateLimiter(config.rate_limit, stop)
        self.client = httpx.Client(
            headers={"User-Agent": config.user_agent(), "Accept": "image/*,*/*;q=0.5"},
            timeout=httpx.Timeout(config.timeout_s),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency),
        )

    def close(self) -> None:
        self.client.close()

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; False if the run is stopping."""
        return not self.stop.wait(max(0.0, seconds))

    def fetch(self, ref: str, rel: str) -> FetchResult:
        """Download, verify and store one ref at ``out_dir/rel``."""
        import httpx

        cfg = self.config
        result = FetchResult(ref=ref, path=rel)
        try:
            result.url = source_url(ref, cfg)
        except InputError as exc:
            result.error, result.permanent = exc.one_line(), True
            return result
        tmp = self.partial_dir / f"{threading.get_ident()}-{hashlib.md5(rel.encode()).hexdigest()}.part"
        for attempt in range(cfg.retries + 1):
            if not self.limiter.wait():
                result.cancelled = True
                return result
            result.attempts = attempt + 1
            retry_after: float | None = None
            try:
                outcome = self._download(result, tmp)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
                result.status, result.error, result.permanent = None, f"{kind}: {exc.__class__.__name__} {exc}".strip(), False
                outcome = "retry"
            if outcome == "done":
                break
            if outcome == "retry-after":
                retry_after = result.extra.pop("retry_after", None)
            if outcome in {"fail", "cancelled"} or attempt == cfg.retries:
                result.cancelled = outcome == "cancelled"
                tmp.unlink(missing_ok=True)
                return result
            delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2**attempt)
            delay = random.uniform(delay / 2, delay)
            if retry_after is not None:
                if retry_after > cfg.max_retry_after_s:
                    result.error += f" (Retry-After {retry_after:.0f} s exceeds {cfg.max_retry_after_s:.0f} s)"
                    return result
                delay = max(retry_after, 0.0)
                if result.status == 429:
                    self.limiter.pause(retry_after)
            log.debug("retrying %s in %.2f s (%s)", result.url, delay, result.error)
            if not self._sleep(delay):
                result.cancelled = True
                return result
        # Downloaded: verify, then move into place atomically.
        try:
            result.format, result.width, result.height = verify_image(tmp)
        except ValueError as exc:
            tmp.unlink(missing_ok=True)
            result.ok, result.error, result.permanent = False, str(exc), True
            return result
        target = self.out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        result.ok, result.error = True, ""
        return result

    def _download(self, result: FetchResult, tmp: Path) -> str:
        """One attempt: "done", "retry", "retry-after", "fail" or "cancelled"."""
        cfg = self.config
        deadline = time.monotonic() + 4 * cfg.timeout_s
        with self.client.stream("GET", result.url) as resp:
            result.status = resp.status_code
            if resp.status_code != 200:
                result.error = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
                if resp.status_code in RETRY_STATUS:
                    wait_s = _parse_retry_after(resp.headers.get("Retry-After"))
                    if wait_s is not None:
                        result.extra["retry_after"] = wait_s
                        return "retry-after"
                    return "retry"
                result.permanent = resp.status_code in PERMANENT_STATUS
                return "fail"
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > cfg.max_bytes:
                result.error, result.permanent = f"too large ({int(length)} bytes > {cfg.max_bytes})", True
                return "fail"
            digest, size = hashlib.sha256(), 0
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as fh:
                for chunk in resp.iter_bytes(1 << 16):
                    size += len(chunk)
                    if size > cfg.max_bytes:
                        result.error, result.permanent = f"too large (over {cfg.max_bytes} bytes)", True
                        return "fail"
                    if self.stop.is_set():
                        return "cancelled"
                    if time.monotonic() > deadline:
                        result.error, result.status = f"timeout: download took over {4 * cfg.timeout_s:.0f} s", None
                        return "retry"
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        if size == 0:
            result.error, result.permanent = "empty body", False
            return "retry"
        result.sha256, result.bytes = digest.hexdigest(), size
        return "done"


def collect_missing_refs(kb_dir: str | Path | KBDir) -> tuple[list[str], collections.Counter]:
    """Distinct image refs of the KB's documents that have no local file, in KB order.

    Returns:
        (refs, counts) with counts ``"documents"``, ``"documents_with_ref"``,
        ``"documents_missing_image"`` and ``"refs_missing_distinct"``.
    """
    kb = KnowledgeBase(kb_dir)
    counts: collections.Counter = collections.Counter()
    seen: dict[str, None] = {}
    for batch in kb.iter_batches(batch_size=8192, columns=["image_ref", "image_path"]):
        for ref, path in zip(batch["image_ref"], batch["image_path"], strict=True):
            counts["documents"] += 1
            if not ref:
                continue
            counts["documents_with_ref"] += 1
            if path:
                continue
            counts["documents_missing_image"] += 1
            seen.setdefault(ref, None)
    counts["refs_missing_distinct"] = len(seen)
    return list(seen), counts


def download_refs(
    refs: Iterable[str],
    out_dir: str | Path,
    config: FetchConfig = FetchConfig(),
    *,
    stop: threading.Event | None = None,
    on_result: Callable[[FetchResult], None] | None = None,
    progress: bool = False,
    extra_report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Download image refs into ``out_dir`` (hashed layout), resumably.

    Args:
        refs: image refs (file names or URLs); duplicates are fetched once.
        out_dir: target images root (created if needed).
        config: see :class:`FetchConfig`.
        stop: set it to stop early: in-flight downloads finish or are dropped,
            the report is written with status ``"interrupted"``.
        on_result: called in the calling thread with every finished ref.
        progress: show a tqdm bar.
        extra_report: merged into ``report.json`` (e.g. the KB's counts).

    Returns:
        The summary (also in ``report.json``): ``status``, ``counts`` (refs,
        already_present, downloaded, failed, failed_permanent,
        skipped_previous_failure, duplicate_name, invalid_ref, non_image_type,
        retries, bytes_downloaded, cancelled), ``out_dir``, ``ledger``,
        ``failures`` (paths).

    A KeyboardInterrupt is handled like ``stop`` and re-raised after the
    report is written.
    """
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot use {out} as the images directory ({exc.strerror or exc})",
                         hint="pass a writable directory to --out") from exc
    out = out.resolve()
    state = out / STATE_DIR
    partial = state / PARTIAL
    # Temp files of a killed run are never valid: start clean.
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    ledger_path, failures_path, report_path = state / LEDGER, state / FAILURES, state / REPORT
    stop = stop or threading.Event()
    counts: collections.Counter = collections.Counter()
    started = _now()

    # Compact in-memory state (millions of refs): path -> (bytes, sha256) of
    # stored files; ref -> (permanent, JSON line) of the last run's failures.
    ledger: dict[str, tuple[int | None, str | None]] = {
        row["path"]: (row.get("bytes"), row.get("sha256"))
        for row, _ in iter_jsonl(ledger_path)
        if isinstance(row.get("path"), str)
    }
    previous_failures: dict[str, tuple[bool, str]] = {
        row["ref"]: (bool(row.get("permanent")), line)
        for row, line in iter_jsonl(failures_path)
        if isinstance(row.get("ref"), str)
    }
    # This run's failures stream to a temp file that replaces failures.jsonl at the end.
    failures_tmp = state / f".{FAILURES}.tmp"
    unfinished: list[str] = []
    interrupted = False
    with ledger_path.open("a", encoding="utf-8") as ledger_fh, failures_tmp.open("w", encoding="utf-8") as failures_fh:

        def add_failure(row: dict[str, Any]) -> None:
            failures_fh.write(json.dumps(row, ensure_ascii=False) + "\n")

        def record_ok(res: FetchResult, *, found_local: bool = False) -> None:
            row = {
                "ref": res.ref, "url": res.url, "path": res.path, "sha256": res.sha256, "bytes": res.bytes,
                "format": res.format, "width": res.width, "height": res.height, "fetched_at": _now(),
            }
            if found_local:
                row["found_local"] = True
            ledger_fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            ledger_fh.flush()  # a kill loses at most the line being written
            ledger[res.path] = (res.bytes, res.sha256)

        todo = _plan(refs, out, config, ledger, previous_failures, counts, add_failure, record_ok)
        log.info("%d refs: %d to download, %d already present", counts["refs"], len(todo), counts["already_present"])

        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="img", desc="fetch-images")

        def handle(res: FetchResult) -> None:
            counts["retries"] += max(0, res.attempts - 1)
            if res.cancelled:
                unfinished.append(res.ref)
                return
            if res.ok:
                counts["downloaded"] += 1
                counts["bytes_downloaded"] += res.bytes
                record_ok(res)
            else:
                counts["failed"] += 1
                counts["failed_permanent"] += int(res.permanent)
                add_failure({"ref": res.ref, "url": res.url, "status": res.status, "error": res.error,
                             "attempts": res.attempts, "permanent": res.permanent})
            if bar is not None:
                bar.update(1)
            if on_result is not None and not interrupted:
                on_result(res)

        fetcher = _Fetcher(out, config, stop)
        it = iter(todo)
        pending: dict[Future, str] = {}
        workers = max(1, config.concurrency)
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
                try:
                    while True:
                        # Bounded submission: at most 2x concurrency futures alive.
                        while not stop.is_set() and len(pending) < 2 * workers:
                            item = next(it, None)
                            if item is None:
                                break
                            pending[pool.submit(fetcher.fetch, *item)] = item[0]
                        if not pending:
                            break
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            del pending[fut]
                            handle(fut.result())
                except KeyboardInterrupt:
                    interrupted = True  # also mutes on_result while draining
                    stop.set()
                    for fut, ref in pending.items():
                        if fut.cancel():
                            unfinished.append(ref)
                        else:
                            handle(fut.result())
        finally:
            fetcher.close()
            if bar is not None:
                bar.close()
        unfinished.extend(ref for ref, _ in it)
        # Refs not attempted because of a stop keep their previous failure record.
        for ref in unfinished:
            if ref in previous_failures:
                failures_fh.write(previous_failures[ref][1] + "\n")
        failures_fh.flush()
        os.fsync(failures_fh.fileno())
    os.replace(failures_tmp, failures_path)
    counts["cancelled"] = len(unfinished)
    status = "interrupted" if interrupted or unfinished else "complete"
    summary: dict[str, Any] = {
        "status": status,
        "started": started,
        "finished": _now(),
        "out_dir": str(out),
        "ledger": str(ledger_path),
        "failures": str(failures_path),
        "counts": dict(counts),
        "config": asdict(config),
        "user_agent": config.user_agent(),
        "versions": {"ragvqa": __version__},
    }
    if extra_report:
        summary.update(extra_report)
    atomic_write_json(report_path, summary)
    shutil.rmtree(partial, ignore_errors=True)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _plan(
    refs: Iterable[str],
    out: Path,
    config: FetchConfig,
    ledger: dict[str, tuple[int | None, str | None]],
    previous_failures: dict[str, tuple[bool, str]],
    counts: collections.Counter,
    add_failure: Callable[[dict[str, Any]], None],
    record_ok: Callable[..., None],
) -> list[tuple[str, str]]:
    """Decide per ref whether it needs a request -> [(ref, relpath)] to download."""
    todo: list[tuple[str, str]] = []
    planned: set[str] = set()
    for ref in refs:
        counts["refs"] += 1
        try:
            rel = wikimedia_relpath(ref)
        except InputError as exc:
            counts["invalid_ref"] += 1
            add_failure({"ref": ref, "url": "", "status": None, "error": exc.one_line(), "attempts": 0, "permanent": True})
            continue
        if rel in planned:
            counts["duplicate_name"] += 1
            continue
        planned.add(rel)
        if os.path.splitext(rel)[1].lower() in NON_IMAGE_EXT:
            counts["non_image_type"] += 1
            add_failure({"ref": ref, "url": "", "status": None, "error": "not an image file type", "attempts": 0, "permanent": True})
            continue
        target = out / rel
        if target.is_file():
            entry = ledger.get(rel)
            size = target.stat().st_size
            if entry is not None and entry[0] == size and (
                not config.verify_existing or sha256_file(target) == entry[1]
            ):
                counts["already_present"] += 1
                continue
            if entry is None:  # put there by someone else (a mirror copy): check and adopt it
                try:
                    fmt, width, height = verify_image(target)
                except ValueError as exc:
                    log.warning("%s is not a usable image (%s): downloading it again", target, exc)
                else:
                    record_ok(FetchResult(ref=ref, path=rel, ok=True, sha256=sha256_file(target), bytes=size,
                                          format=fmt, width=width, height=height), found_local=True)
                    counts["already_present"] += 1
                    continue
        previous = previous_failures.get(ref)
        if previous is not None and previous[0] and not config.retry_failed:
            counts["skipped_previous_failure"] += 1
            add_failure({**json.loads(previous[1]), "from_previous_run": True})
            continue
        todo.append((ref, rel))
    if config.limit is not None:
        counts["deferred_by_limit"] = max(0, len(todo) - config.limit)
        del todo[config.limit :]
    return todo


def fetch_images(
    kb_dir: str | Path | KBDir,
    out_dir: str | Path,
    config: FetchConfig = FetchConfig(),
    *,
    stop: threading.Event | None = None,
    on_result: Callable[[FetchResult], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Download the KB's missing images into ``out_dir`` (see :func:`download_refs`).

    Raises:
        KnowledgeBaseError: ``kb_dir`` is not a finished KB.
    """
    kb = as_kb_dir(kb_dir)
    refs, kb_counts = collect_missing_refs(kb)
    return download_refs(
        refs, out_dir, config, stop=stop, on_result=on_result, progress=progress,
        extra_report={"kb_dir": str(kb.root.resolve()), "kb_counts": dict(kb_counts)},
    )
