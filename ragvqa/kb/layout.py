"""The KB directory: its file names, manifests, completeness checks and path rules.

One :class:`KBDir` object owns the on-disk layout; every stage (build, fetch,
embed, index, search) asks it for paths and checks instead of spelling them::

    KB_DIR/
      manifest.json                  build manifest: source, config, counts,
                                     shards, images_root, status
      documents/part-NNNNN.parquet   document shards (page CRC32 checksums)
      missing_images.jsonl           image references without a local file
      .build/                        per-shard work files while building
      .embed.lock                    held (flock) while an embed run writes
      .index-build/                  checkpoints of an index build in progress
      .index-build.lock              held (flock) while an index build runs
      images/                        images root of KBs that keep their images inside
      embeddings/manifest.json       retriever fingerprint, dim, shards, digests, status
      embeddings/part-NNNNN.npy      float16 (n, D) rows (+ part-NNNNN.ids.npy int64 ids)
      index/index.faiss              the Faiss index
      index/ids.npy                  internal id -> doc_id (absent when identity)
      index/params.json              factory, search params, fingerprint, digests
      */.verified.json               digests already checked, by file size/mtime/inode
                                     (ragvqa.kb.files.sha256_verified)

Relocation: paths inside the KB are stored relative to it (``images_root``
is ``"images"`` when the images live in ``KB_DIR/images``), so a moved or
copied KB directory keeps working. An images root outside the KB is stored
absolute and can be re-pointed with :meth:`KBDir.set_images_root` (the
documents and embeddings stay valid: the documents digest does not include
where the images live).

Manifests are read once per object and cached; :meth:`KBDir.reload` drops
the cache (a long-lived process that wants to see a rebuild).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ragvqa.errors import KnowledgeBaseError
from ragvqa.kb.files import atomic_write_json, canonical_digest, load_json

MANIFEST = "manifest.json"
DOCUMENTS_DIR = "documents"
SHARD_PATTERN = "part-{:05d}.parquet"
MISSING_IMAGES = "missing_images.jsonl"
BUILD_WORK_DIR = ".build"
IMAGES_DIR = "images"
EMBEDDINGS_DIR = "embeddings"
EMBEDDINGS_MANIFEST = "manifest.json"
VECTORS_PATTERN = "part-{:05d}.npy"
IDS_PATTERN = "part-{:05d}.ids.npy"
EMBED_LOCK = ".embed.lock"
INDEX_DIR = "index"
INDEX_FILE = "index.faiss"
INDEX_IDS_FILE = "ids.npy"
INDEX_PARAMS = "params.json"
# Multi-token (late interaction) KBs: the token index lives in index/late/ (its own params.json).
LATE_INDEX_DIR = "late"
COMPLETE = "complete"
IN_PROGRESS = "in_progress"
#: A manifest larger than this is not one ragvqa wrote (a 16M-document KB's is ~1 MB).
MAX_MANIFEST_BYTES = 64 << 20


def spec_of(fingerprint: dict[str, Any] | None) -> str | None:
    """The ``KIND:ARG`` retriever spec a recorded fingerprint names, if it can be told.

    A ``spec`` key wins; baseline names (``text:minilm``, ``clip:PATH``) are
    specs themselves; ReT-2 records ``name`` "ret2" and its checkpoint ``source``.
    """
    if not isinstance(fingerprint, dict):
        return None
    if fingerprint.get("spec"):
        return str(fingerprint["spec"])
    name = str(fingerprint.get("name") or "")
    if ":" in name:
        return name
    if name and fingerprint.get("source"):
        return f"{name}:{fingerprint['source']}"
    return None


def inside(base: str | Path, rel: str | None) -> Path | None:
    """``base/rel`` with symlinks resolved, if it stays inside ``base``; else None.

    ``rel`` comes from data (a manifest, a parquet row): absolute paths, ``..``
    that climbs out, NUL bytes and symlinks leading elsewhere are refused.
    """
    if not rel or not isinstance(rel, str) or "\0" in rel or os.path.isabs(rel):
        return None
    root = Path(base).resolve()
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        return None
    return path


class KBDir:
    """One KB directory: paths, cached manifests, checks.

    Args:
        root: the KB directory (need not exist yet: the builder creates it).

    Every check raises :class:`ragvqa.errors.KnowledgeBaseError` with one line
    that names the command that fixes it.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self._manifest: dict[str, Any] | None = None
        self._embeddings_manifest: dict[str, Any] | None = None
        self._index_params: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"KBDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # ------------------------------------------------------------------ names
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def documents_dir(self) -> Path:
        return self.root / DOCUMENTS_DIR

    @property
    def missing_images_path(self) -> Path:
        return self.root / MISSING_IMAGES

    @property
    def build_work_dir(self) -> Path:
        return self.root / BUILD_WORK_DIR

    @property
    def default_images_dir(self) -> Path:
        """``KB_DIR/images``: where a KB that keeps its own images puts them."""
        return self.root / IMAGES_DIR

    @property
    def embeddings_dir(self) -> Path:
        return self.root / EMBEDDINGS_DIR

    @property
    def embeddings_manifest_path(self) -> Path:
        return self.embeddings_dir / EMBEDDINGS_MANIFEST

    @property
    def embed_lock_path(self) -> Path:
        """``KB_DIR/.embed.lock``: beside ``embeddings/``, which ``--force`` deletes while it is held."""
        return self.root / EMBED_LOCK

    @property
    def index_dir(self) -> Path:
        return self.root / INDEX_DIR

    @property
    def index_file(self) -> Path:
        return self.index_dir / INDEX_FILE

    @property
    def index_ids_path(self) -> Path:
        return self.index_dir / INDEX_IDS_FILE

    @property
    def index_params_path(self) -> Path:
        return self.index_dir / INDEX_PARAMS

    @property
    def late_index_dir(self) -> Path:
        """``index/late/``: the late-interaction index of a multi-token KB (:mod:`ragvqa.index.late_interaction`)."""
        return self.index_dir / LATE_INDEX_DIR

    @property
    def late_index_params_path(self) -> Path:
        return self.late_index_dir / INDEX_PARAMS

    @staticmethod
    def shard_name(number: int) -> str:
        """``part-NNNNN.parquet``."""
        return SHARD_PATTERN.format(number)

    @staticmethod
    def vectors_name(number: int) -> str:
        """``part-NNNNN.npy``: embedding rows of document shard ``number``."""
        return VECTORS_PATTERN.format(number)

    @staticmethod
    def ids_name(number: int) -> str:
        """``part-NNNNN.ids.npy``: the doc ids of those rows."""
        return IDS_PATTERN.format(number)

    def shard_path(self, name: str) -> Path:
        """A document shard named by a manifest entry, refused if it escapes ``documents/``."""
        path = inside(self.documents_dir, name)
        if path is None:
            raise KnowledgeBaseError(
                f"{self.manifest_path} names a document shard outside {self.documents_dir}: {name!r}",
                hint=f"rebuild the KB: {self.build_command(force=True)}",
            )
        return path

    def embedding_path(self, name: str) -> Path:
        """An embedding file named by the embeddings manifest, refused if it escapes ``embeddings/``."""
        path = inside(self.embeddings_dir, name)
        if path is None:
            raise KnowledgeBaseError(
                f"{self.embeddings_manifest_path} names a file outside {self.embeddings_dir}: {name!r}",
                hint=f"re-embed: {self.embed_command(force=True)}",
            )
        return path

    # -------------------------------------------------------------- commands
    def build_command(self, *, force: bool = False) -> str:
        """The ``ragvqa build-kb`` command that (re)builds this KB, from its recorded config."""
        config = self._quiet_manifest().get("config")
        wiki = "PATH"
        images = ""
        if isinstance(config, dict):
            sources = config.get("sources")
            if isinstance(sources, list) and len(sources) == 1 and isinstance(sources[0], str):
                wiki = sources[0]
            elif isinstance(sources, list) and sources and all(isinstance(s, str) for s in sources):
                wiki = str(Path(os.path.commonpath(sources)))
            if isinstance(config.get("images_root"), str):
                images = f" --images {self.root / config['images_root']}"  # a relative root lies in the KB
        return f"ragvqa build-kb --wiki {wiki} --out {self.root}{images}" + (" --force" if force else "")

    def embed_command(self, spec: str | None = None, *, force: bool = False) -> str:
        """The ``ragvqa embed`` command, with the recorded retriever when it is known."""
        if spec is None:
            spec = spec_of(self._quiet(lambda: self.embeddings_manifest).get("retriever"))
        return f"ragvqa embed {self.root} --retriever {spec or 'SPEC'}" + (" --force" if force else "")

    @staticmethod
    def _quiet(read: Any) -> dict[str, Any]:
        """``read()`` if it succeeds, else {} (for composing hints: never raises)."""
        try:
            return read()
        except KnowledgeBaseError:
            return {}

    def _quiet_manifest(self) -> dict[str, Any]:
        return self._quiet(lambda: self.manifest)

    @contextlib.contextmanager
    def writing(self, rerun: str | Callable[[], str]) -> Iterator[None]:
        """Turn an OSError raised while a stage writes into a one-line KnowledgeBaseError.

        Disk full (ENOSPC), file-size limit (EFBIG), quota (EDQUOT), a
        read-only file system and the like end a stage with a message naming
        the reason and ``rerun`` (every stage resumes from its last whole
        shard), not a traceback. ``rerun`` may be a callable, evaluated only
        on an error (the command can then quote the manifest written meanwhile).
        """
        try:
            yield
        except OSError as exc:
            code = exc.errno if isinstance(exc.errno, int) else None
            reason = os.strerror(code) if code else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            name = f" ({errno.errorcode[code]})" if code is not None and code in errno.errorcode else ""
            where = exc.filename or self.root
            command = rerun() if callable(rerun) else rerun
            raise KnowledgeBaseError(
                f"cannot write {where}: {reason}{name}",
                hint=f"free space or raise the limit, then rerun the same command (it resumes): {command}",
            ) from None

    # -------------------------------------------------------------- manifest
    def exists(self) -> bool:
        """Whether the build manifest is there (the KB was at least started)."""
        return self.manifest_path.is_file()

    def _load(self, path: Path, what: str, hint: str) -> dict[str, Any]:
        try:
            data = load_json(path, max_bytes=MAX_MANIFEST_BYTES)
        except (OSError, ValueError) as exc:
            raise KnowledgeBaseError(f"{path}: the {what} is unreadable ({exc})", hint=hint) from None
        if not isinstance(data, dict):
            raise KnowledgeBaseError(f"{path}: the {what} is not a JSON object", hint=hint)
        return data

    @property
    def manifest(self) -> dict[str, Any]:
        """The build manifest, read on first use and cached.

        Raises:
            KnowledgeBaseError: no KB here (names ``ragvqa build-kb``), or the
                manifest is not a JSON object.
        """
        if self._manifest is None:
            if not self.root.is_dir():
                raise KnowledgeBaseError(
                    f"knowledge base directory not found: {self.root}",
                    hint=f"build one with: ragvqa build-kb --wiki PATH --out {self.root} "
                    "(or ragvqa build-kb --sample --out data/kb/sample --retriever visual:minilm)",
                )
            if not self.manifest_path.is_file():
                raise KnowledgeBaseError(
                    f"{self.root} is not a knowledge base (no {MANIFEST})",
                    hint=f"build one with: ragvqa build-kb --wiki PATH --out {self.root}",
                )
            self._manifest = self._load(
                self.manifest_path, "KB manifest",
                f"rebuild the KB: ragvqa build-kb --wiki PATH --out {self.root} --force",
            )
        return self._manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the build manifest atomically and keep it as the cached copy."""
        atomic_write_json(self.manifest_path, manifest)
        self._manifest = manifest

    def reload(self) -> None:
        """Forget the cached manifests and index parameters (read them again on next use)."""
        self._manifest = self._embeddings_manifest = self._index_params = None

    @property
    def status(self) -> str | None:
        """The build status (``complete``, ``in_progress``), or None without a manifest."""
        return self.manifest.get("status") if self._manifest is not None or self.exists() else None

    # ---------------------------------------------------------------- checks
    def require_built(self) -> dict[str, Any]:
        """The manifest; raises when there is no KB here."""
        return self.manifest

    def require_finished(self) -> dict[str, Any]:
        """The manifest of a finished build; raises for a missing or unfinished one."""
        manifest = self.manifest
        if manifest.get("status") != COMPLETE:
            raise KnowledgeBaseError(
                f"{self.root} is not finished (status {manifest.get('status')!r})",
                hint=f"rerun the same command to resume it: {self.build_command()}",
            )
        return manifest

    def require_embedded(self) -> dict[str, Any]:
        """The embeddings manifest of a finished embedding run; raises otherwise.

        Only the embedding stage is checked (the index can be built from
        embeddings alone); readers of documents call :meth:`require_finished`.
        """
        manifest = self.embeddings_manifest
        if manifest.get("status") != COMPLETE:
            raise KnowledgeBaseError(
                f"the embeddings of {self.root} are unfinished (status {manifest.get('status')!r})",
                hint=f"rerun to resume: {self.embed_command()}",
            )
        return manifest

    def tokens_per_document(self) -> int:
        """Vectors per document in the embeddings: 1, or T for a multi-token (late interaction) retriever."""
        value = self.embeddings_manifest.get("tokens_per_document", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1

    def require_indexed(self) -> dict[str, Any]:
        """The index parameters of an embedded KB whose index files are present; raises otherwise.

        A multi-token KB (:meth:`tokens_per_document` > 1) needs its
        late-interaction index (``index/late/params.json``) instead.
        """
        self.require_embedded()
        if self.tokens_per_document() > 1:
            if not self.late_index_params_path.is_file():
                raise KnowledgeBaseError(
                    f"{self.root} has no late-interaction index ({self.late_index_params_path} is missing)",
                    hint=f"build it with: {self.embed_command()}",
                )
            return self._load(self.late_index_params_path, "late-interaction index parameters",
                              f"rebuild it with: {self.embed_command()}")
        params = self.index_params
        for path in (self.index_file, *([self.index_ids_path] if params.get("ids") not in (None, "identity") else [])):
            if not path.is_file():
                raise KnowledgeBaseError(
                    f"{self.root} has an incomplete vector index ({path} is missing)",
                    hint=f"rebuild it with: {self.embed_command()}",
                )
        return params

    # ---------------------------------------------------------------- shards
    def shard_entries(self) -> list[dict[str, Any]]:
        """The manifest's shard list (``file``, ``rows``, ...), checked for sane values."""
        shards = self.manifest.get("shards", [])
        if not isinstance(shards, list) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str)
            and isinstance(e.get("rows"), int) and e["rows"] >= 0
            for e in shards
        ):
            raise KnowledgeBaseError(
                f"{self.manifest_path}: the shard list is malformed",
                hint=f"rebuild the KB: {self.build_command(force=True)}",
            )
        return shards

    def shard_files(self) -> list[Path]:
        """Document shard paths in doc_id order."""
        return [self.shard_path(e["file"]) for e in self.shard_entries()]

    @property
    def num_documents(self) -> int:
        return sum(int(e["rows"]) for e in self.shard_entries())

    # ---------------------------------------------------------------- images
    def images_root_value(self, path: str | Path | None) -> str | None:
        """How an images root is recorded: relative (posix) inside the KB, else absolute."""
        if path is None:
            return None
        resolved = Path(path).expanduser().resolve()
        root = self.root.resolve()
        if resolved == root or root in resolved.parents:
            return resolved.relative_to(root).as_posix() or "."
        return str(resolved)

    @property
    def images_root(self) -> Path | None:
        """The directory ``image_path`` values are relative to, or None (built without images)."""
        value = self.manifest.get("images_root")
        if not value or not isinstance(value, str):
            return None
        path = Path(value)
        return path if path.is_absolute() else self.root / path

    def image_file(self, image_path: str | None) -> Path | None:
        """Absolute path of a document's ``image_path`` under the images root, or None.

        None when the KB has no images root, the value is empty, or it escapes
        the root (never opened). The file itself may be missing.
        """
        root = self.images_root
        if root is None or not image_path:
            return None
        return inside(root, image_path)

    def set_images_root(self, path: str | Path | None, *, note: dict[str, Any] | None = None) -> None:
        """Record a new images root in the manifest (relative when inside the KB).

        ``note`` (what changed and why) is appended to the manifest's
        ``image_updates`` list. Callers check the files first
        (:func:`ragvqa.kb.image_paths.repoint_images`).
        """
        import datetime as _dt

        manifest = dict(self.require_finished())
        manifest["images_root"] = self.images_root_value(path)
        if note is not None:
            stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            manifest["image_updates"] = [*manifest.get("image_updates", []), {"time": stamp, **note}]
        self.write_manifest(manifest)

    # ------------------------------------------------------------ embeddings
    def has_embeddings(self) -> bool:
        return self.embeddings_manifest_path.is_file()

    @property
    def embeddings_manifest(self) -> dict[str, Any]:
        """The embeddings manifest, read on first use and cached; raises when the KB is not embedded."""
        if self._embeddings_manifest is None:
            if not self.embeddings_manifest_path.is_file() and not self.exists():
                raise KnowledgeBaseError(
                    f"{self.root} is not a knowledge base (no {MANIFEST})",
                    hint=f"build one with: ragvqa build-kb --wiki PATH --out {self.root}, "
                    f"then embed it with: ragvqa embed {self.root} --retriever SPEC",
                )
            if not self.embeddings_manifest_path.is_file():
                raise KnowledgeBaseError(
                    f"{self.root} has no embeddings ({self.embeddings_manifest_path} does not exist)",
                    hint=f"embed it with: ragvqa embed {self.root} --retriever SPEC",
                )
            self._embeddings_manifest = self._load(
                self.embeddings_manifest_path, "embeddings manifest",
                f"re-embed with: ragvqa embed {self.root} --retriever SPEC --force",
            )
        return self._embeddings_manifest

    def write_embeddings_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the embeddings manifest atomically and keep it as the cached copy."""
        atomic_write_json(self.embeddings_manifest_path, manifest)
        self._embeddings_manifest = manifest

    def recorded_retriever_spec(self) -> str | None:
        """The ``KIND:ARG`` spec of the retriever that embedded the KB, if the manifest says."""
        return spec_of(self.embeddings_manifest.get("retriever"))

    def documents_digest(self) -> str:
        """Identity of the documents build: its shard list and build config.

        Embeddings record it; a KB rebuilt differently gets another digest and
        its old embeddings are recognised as stale. Where the images live is
        left out (``images_root`` at the top and in the config), so a moved KB
        or a re-pointed images root keeps its embeddings.
        """
        manifest = self.manifest
        config = manifest.get("config")
        if isinstance(config, dict):
            config = {k: v for k, v in config.items() if k != "images_root"}
        shards = [{"file": s.get("file"), "rows": s.get("rows")} for s in self.shard_entries()]
        return canonical_digest({"shards": shards, "config": config, "digest": 2})

    def accepts_documents_digest(self, recorded: str | None) -> bool:
        """Whether embeddings that recorded ``recorded`` were made from these documents.

        Also accepts the digest of earlier ragvqa versions (which included
        the absolute images root), so existing KBs keep their embeddings.
        """
        if not recorded:
            return True
        if recorded == self.documents_digest():
            return True
        manifest = self.manifest
        shards = [{"file": s.get("file"), "rows": s.get("rows")} for s in self.shard_entries()]
        legacy = canonical_digest(
            {"shards": shards, "config": manifest.get("config"), "images_root": manifest.get("images_root")}
        )
        return recorded == legacy

    # ----------------------------------------------------------------- index
    def has_index(self) -> bool:
        return self.index_params_path.is_file() or self.late_index_params_path.is_file()

    @property
    def index_params(self) -> dict[str, Any]:
        """``index/params.json``, read on first use and cached; raises when there is no index."""
        if self._index_params is None:
            if not self.index_params_path.is_file():
                raise KnowledgeBaseError(
                    f"{self.root} has no vector index ({self.index_params_path} is missing)",
                    hint=f"build it with: {self.embed_command()}",
                )
            self._index_params = self._load(
                self.index_params_path, "index parameters", f"rebuild it with: {self.embed_command()}"
            )
        return self._index_params

    # --------------------------------------------------------------- cleanup
    def clear_derived(self) -> None:
        """Delete ``embeddings/`` and ``index/`` (a re-embed with ``--force``)."""
        for path in (self.embeddings_dir, self.index_dir):
            if path.exists():
                shutil.rmtree(path)
        self._embeddings_manifest = self._index_params = None

    def clear_index(self) -> None:
        """Delete ``index/`` (it no longer covers the embeddings)."""
        if self.index_dir.exists():
            shutil.rmtree(self.index_dir)
        self._index_params = None

    def clear_all(self) -> None:
        """Delete every file the KB stages wrote (a rebuild with ``--force``); other files stay."""
        for path in (self.manifest_path, self.missing_images_path):
            path.unlink(missing_ok=True)
        for path in (self.documents_dir, self.build_work_dir, self.embeddings_dir, self.index_dir):
            shutil.rmtree(path, ignore_errors=True)
        self.reload()


def as_kb_dir(kb: str | Path | KBDir) -> KBDir:
    """A KBDir for a path (or the KBDir itself, keeping its cached manifests)."""
    return kb if isinstance(kb, KBDir) else KBDir(kb)


__all__ = ["KBDir", "as_kb_dir", "inside", "spec_of"]
