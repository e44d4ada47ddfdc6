"""Image references -> local files.

A source names an image either by its MediaWiki file name (``"Buzz Aldrin.jpg"``,
``"File:Buzz_Aldrin.jpg"``) or by an image URL (the E-VQA KB and Wiki6M list
``https://upload.wikimedia.org/wikipedia/commons/a/ab/Name.jpg``, sometimes a
thumbnail ``.../thumb/a/ab/Name.jpg/220px-Name.jpg``). Both are reduced to one
*canonical name* the way MediaWiki normalises titles (URL-decoded, no
``File:``/``Image:`` prefix, spaces as underscores, first letter upper-case,
NFC), and :class:`ImageResolver` looks that name up under an images root in
three layouts, in this order:

1. a mapping file (TSV or JSON/JSONL: ref, url or name -> path);
2. Wikimedia's hashed layout ``{h[0]}/{h[0:2]}/{Name}``, ``h = md5(Name)``;
3. flat, ``{Name}`` directly in the root (and, as a fallback, the name as the
   source spelled it: original case, still URL-encoded).

Every path it returns is relative to the root and never escapes it: ``..``,
absolute paths, and symlinks that lead outside the root are refused and
counted. A reference with no local file is not an error (most large KBs miss
some images); it is counted and the caller keeps the reference.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import html
import json
import logging
import os
import stat
import unicodedata
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ragvqa.errors import DataError, InputError

log = logging.getLogger(__name__)

COMMONS_BASE = "https://upload.wikimedia.org/wikipedia/commons"
_PREFIXES = ("file:", "image:")
# Characters Wikimedia leaves unencoded in upload URLs (RFC 3986 sub-delims that
# MediaWiki's wfUrlencode keeps); everything else is percent-encoded.
_URL_SAFE = "!$'()*,;:@~-._"
# Above this many top-level entries the flat layout is looked up with stat()
# instead of an in-memory set of names (about 100 bytes per name).
FLAT_CACHE_MAX = 1_000_000


def _is_url(ref: str) -> bool:
    low = ref[:8].lower()
    return low.startswith(("http://", "https://")) or ref.startswith("//")


def _url_basename(url: str) -> str:
    """The file-name segment of an image URL, still percent-encoded.

    Thumbnail URLs (``.../thumb/a/ab/Name.jpg/220px-Name.jpg``) give the
    original file name (the segment after the two hash directories), not the
    rendered thumbnail's name.
    """
    path = urlsplit(url if not url.startswith("//") else "https:" + url).path
    segments = [s for s in path.split("/") if s]
    if not segments:
        return ""
    if "thumb" in segments:
        i = segments.index("thumb")
        # thumb / h[0] / h[0:2] / Name / WIDTHpx-Name
        if len(segments) > i + 3 and len(segments[i + 1]) == 1 and len(segments[i + 2]) == 2:
            return segments[i + 3]
    return segments[-1]


def _strip_prefix(name: str) -> str:
    stripped = name.lstrip()
    for prefix in _PREFIXES:
        if stripped[: len(prefix)].lower() == prefix:
            return stripped[len(prefix) :]
    return name


def _ucfirst(name: str) -> str:
    first = name[0].upper()
    # MediaWiki keeps a first letter whose upper case is several letters (ß -> SS).
    return (first if len(first) == 1 else name[0]) + name[1:]


def _raw_name(ref: str) -> str:
    """The name as the source spelled it (no prefix, not decoded, case kept)."""
    ref = ref.strip()
    name = _url_basename(ref) if _is_url(ref) else ref
    return _strip_prefix(name).strip()


def canonical_name(ref: str) -> str:
    """A File name or image URL -> the MediaWiki file name with underscores.

    ``"File:buzz aldrin.jpg"``, ``"Buzz_Aldrin.jpg"`` and
    ``"https://upload.wikimedia.org/wikipedia/commons/thumb/d/dc/Buzz_Aldrin.jpg/220px-Buzz_Aldrin.jpg"``
    all give ``"Buzz_Aldrin.jpg"`` (the first: ``"Buzz_aldrin.jpg"``: only the
    first letter is upper-cased, as MediaWiki does).

    Steps: take the URL's file segment (thumbnails give the original), strip a
    ``File:``/``Image:`` prefix (any case), URL-decode (``%28`` -> ``(``),
    decode HTML entities, NFC-normalise, turn runs of spaces/underscores into
    one underscore, trim them at both ends, upper-case the first letter.

    Raises:
        InputError: the reference yields no usable file name (empty, or it
            contains ``/``, ``\\`` or NUL, or is ``.``/``..``).
    """
    name = _raw_name(ref)
    if "%" in name:
        name = unquote(name)
    if "&" in name and not _is_url(ref.strip()):
        name = html.unescape(name)
    name = _strip_prefix(name)  # a prefix may have been percent-encoded
    name = unicodedata.normalize("NFC", name)
    name = "_".join(name.replace("_", " ").split())
    if not name or name in {".", ".."} or any(c in name for c in "/\\\0"):
        raise InputError(f"image reference {ref!r} names no valid file", hint="fix or drop this reference")
    return _ucfirst(name)


def wikimedia_relpath(name: str) -> str:
    """Wikimedia's storage path ``"{h[0]}/{h[0:2]}/{Name}"`` for a file name.

    ``h`` is the hex md5 of the canonical (underscored, UTF-8) name. Accepts any
    reference :func:`canonical_name` accepts.
    """
    return _hashed(canonical_name(name))


def _hashed(canonical: str) -> str:
    digest = hashlib.md5(canonical.encode("utf-8")).hexdigest()
    return f"{digest[0]}/{digest[:2]}/{canonical}"


def commons_url(name: str) -> str:
    """The ``upload.wikimedia.org`` URL of a Commons file name (percent-encoded)."""
    rel = wikimedia_relpath(name)
    head, _, file_name = rel.rpartition("/")
    return f"{COMMONS_BASE}/{head}/{quote(file_name, safe=_URL_SAFE)}"


def _inside(root_real: str, path_real: str) -> bool:
    return path_real == root_real or path_real.startswith(root_real.rstrip(os.sep) + os.sep)


def _lexically_safe(rel: str) -> bool:
    """A relative path with no absolute part, drive, ``..`` or NUL."""
    if not rel or "\0" in rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        return False
    parts = rel.replace("\\", "/").split("/")
    return ".." not in parts and not (len(parts[0]) >= 2 and parts[0][1] == ":")


class ImageResolver:
    """Find the local file of an image reference under ``images_root``.

    Args:
        images_root: the directory holding the images (any of the layouts), or
            None: then every reference is missing.
        mapping_file: optional TSV (``key<TAB>path``, an optional header line
            whose second column is ``path``), JSON (an object ``{key: path}``
            or a list of ``{"ref"|"url"|"name": ..., "path": ...}``) or JSONL
            (one such object per line). Keys are refs, URLs or file names;
            paths are relative to the mapping file's directory or absolute,
            and must lie under ``images_root`` (others are refused, counted).

    Attributes:
        stats: counts: ``"resolved"``, ``"missing"``, ``"resolved_mapping"``,
            ``"resolved_wikimedia"``, ``"resolved_flat"``,
            ``"resolved_flat_raw"`` (the source's own spelling),
            ``"resolved_path"`` (a relative path, :meth:`resolve_path`),
            ``"refused_escape"`` (a candidate or mapped file outside the root),
            ``"invalid_ref"``, and while loading the mapping
            ``"mapping_entries"``, ``"mapping_refused"``, ``"mapping_malformed"``,
            ``"mapping_missing_file"``.

    Raises:
        InputError: images_root is not a directory, or the mapping file is
            missing; DataError: the mapping file cannot be parsed as a whole.

    Lookups read directory listings, not one ``stat`` per ref: each hashed
    directory ``h/hh`` is listed once on first use, the root (flat layout)
    once; both are kept as sets of names while the total stays under
    :data:`FLAT_CACHE_MAX` names (about 100 bytes each), beyond which lookups
    fall back to ``lstat``. This is several times faster on a local disk
    (bench/bench_images.py) and much more on network file systems. The
    answers reflect the files present when a directory was first listed: use
    a fresh resolver after adding images.
    """

    def __init__(self, images_root: Path | None, mapping_file: Path | None = None) -> None:
        self.stats: collections.Counter = collections.Counter()
        self.images_root: Path | None = None
        self._root_real = ""
        if images_root is not None:
            root = Path(images_root).expanduser()
            if not root.is_dir():
                raise InputError(f"images directory {root} does not exist", hint="pass an existing directory to --images")
            self.images_root = root.resolve()
            self._root_real = str(self.images_root)
        self._mapping: dict[str, str] = {}
        self._flat: set[str] | None = None
        self._flat_links: set[str] = set()
        self._flat_scanned = False
        self._hash_dirs: dict[str, bool] = {}
        # Hashed layout: "a/ab" -> (regular file names, symlink names), listed on
        # first use while the total stays under FLAT_CACHE_MAX names.
        self._dir_cache: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._cached_names = 0
        if mapping_file is not None:
            self._load_mapping(Path(mapping_file))

    # ------------------------------------------------------------------ mapping
    def _load_mapping(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(f"image mapping file {path} does not exist", hint="check --image-map")
        try:
            self._read_mapping(path)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text ({exc.reason})", hint="fix the mapping file") from None

    def _read_mapping(self, path: Path) -> None:
        base = path.resolve().parent
        suffix = path.suffix.lower()
        with path.open(encoding="utf-8") as fh:
            if suffix == ".json":
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})", hint="fix the mapping file") from exc
                except RecursionError:
                    raise DataError(f"{path} is not valid JSON (nested too deeply)", hint="fix the mapping file") from None
                if isinstance(data, dict):
                    for key, value in data.items():
                        self._add_mapping(key, value, base, f"{path} key {key!r}")
                elif isinstance(data, list):
                    for i, item in enumerate(data):
                        self._add_mapping_object(item, base, f"{path} item {i}")
                else:
                    raise DataError(f"{path} holds neither an object nor a list", hint="fix the mapping file")
            elif suffix in {".jsonl", ".ndjson"}:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except (ValueError, RecursionError):
                        self.stats["mapping_malformed"] += 1
                        log.warning("%s line %d: not JSON, skipped", path, lineno)
                        continue
                    self._add_mapping_object(item, base, f"{path} line {lineno}")
            else:  # TSV
                for lineno, line in enumerate(fh, 1):
                    line = line.rstrip("\r\n")
                    if not line.strip():
                        continue
                    cols = line.split("\t")
                    if lineno == 1 and len(cols) >= 2 and cols[1].strip().lower() == "path":
                        continue  # header
                    if len(cols) != 2:
                        self.stats["mapping_malformed"] += 1
                        log.warning("%s line %d: expected KEY<TAB>PATH, skipped", path, lineno)
                        continue
                    self._add_mapping(cols[0], cols[1], base, f"{path} line {lineno}")
        log.info("image mapping %s: %d entries", path, self.stats["mapping_entries"])

    def _add_mapping_object(self, item: object, base: Path, where: str) -> None:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            self.stats["mapping_malformed"] += 1
            log.warning("%s: expected an object with a 'path', skipped", where)
            return
        keys = [item[k] for k in ("ref", "url", "name") if isinstance(item.get(k), str)]
        if not keys:
            self.stats["mapping_malformed"] += 1
            log.warning("%s: no 'ref', 'url' or 'name', skipped", where)
            return
        for key in keys:
            self._add_mapping(key, item["path"], base, where)

    def _add_mapping(self, key: object, value: object, base: Path, where: str) -> None:
        if not isinstance(key, str) or not isinstance(value, str) or not key.strip() or not value.strip():
            self.stats["mapping_malformed"] += 1
            log.warning("%s: empty or non-text key/path, skipped", where)
            return
        if self.images_root is None:
            self.stats["mapping_refused"] += 1
            return
        target = Path(value.strip())
        target = target if target.is_absolute() else base / target
        # Lexical check here (normpath folds ".."); symlinks are checked at lookup.
        target_norm = os.path.normpath(str(target))
        if not _inside(self._root_real, target_norm) or target_norm == self._root_real:
            self.stats["mapping_refused"] += 1
            log.warning("%s: %s is outside the images root %s, refused", where, value, self._root_real)
            return
        rel = os.path.relpath(target_norm, self._root_real).replace(os.sep, "/")
        key = key.strip()
        self._mapping.setdefault(key, rel)
        with contextlib.suppress(InputError):
            self._mapping.setdefault(canonical_name(key), rel)
        self.stats["mapping_entries"] += 1

    # ------------------------------------------------------------------ checks
    def _check_file(self, rel: str) -> str | None:
        """``rel`` if it is a regular file under the root (symlinks must stay inside).

        Returns None when absent; counts and returns None when it escapes.
        """
        if not _lexically_safe(rel):
            self.stats["refused_escape"] += 1
            return None
        full = os.path.join(self._root_real, rel)
        try:
            st = os.lstat(full)
        except (OSError, ValueError):
            return None
        parent = os.path.dirname(rel)
        if stat.S_ISREG(st.st_mode) and (not parent or self._dir_inside(parent)):
            return rel
        if stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and parent):
            real = os.path.realpath(full)
            if not _inside(self._root_real, real):
                self.stats["refused_escape"] += 1
                log.debug("image %s leads outside %s (%s), refused", rel, self._root_real, real)
                return None
            return rel if os.path.isfile(real) else None
        return None

    def _dir_inside(self, rel_dir: str) -> bool:
        """Whether a directory under the root really lies inside it (cached)."""
        ok = self._hash_dirs.get(rel_dir)
        if ok is None:
            ok = _inside(self._root_real, os.path.realpath(os.path.join(self._root_real, rel_dir)))
            self._hash_dirs[rel_dir] = ok
        return ok

    def _check_hashed(self, rel: str) -> str | None:
        """Look ``h/hh/Name`` up in the cached listing of ``h/hh`` (listed once)."""
        rel_dir, _, file_name = rel.rpartition("/")
        listing = self._dir_cache.get(rel_dir)
        if listing is None:
            if self._cached_names >= FLAT_CACHE_MAX:
                return self._check_file(rel)
            files: set[str] = set()
            links: set[str] = set()
            try:
                with os.scandir(os.path.join(self._root_real, rel_dir)) as it:
                    for entry in it:
                        if entry.is_symlink():
                            links.add(entry.name)
                        elif entry.is_file(follow_symlinks=False):
                            files.add(entry.name)
            except FileNotFoundError:
                pass
            except OSError:
                return self._check_file(rel)  # unreadable: let stat decide
            listing = (frozenset(files), frozenset(links))
            self._dir_cache[rel_dir] = listing
            self._cached_names += len(files) + len(links) + 1
        if file_name in listing[0]:
            if self._dir_inside(rel_dir):
                return rel
            self.stats["refused_escape"] += 1
            return None
        if file_name in listing[1]:
            return self._check_file(rel)
        return None

    def _scan_flat(self) -> None:
        """Build the set of top-level file names once (if the root is small enough)."""
        self._flat_scanned = True
        names: set[str] = set()
        try:
            with os.scandir(self._root_real) as it:
                for entry in it:
                    if len(names) + len(self._flat_links) >= FLAT_CACHE_MAX:
                        log.info("images root %s has over %d entries: flat lookups use stat()", self._root_real, FLAT_CACHE_MAX)
                        self._flat_links.clear()
                        return
                    if entry.is_symlink():
                        self._flat_links.add(entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        names.add(entry.name)
        except OSError as exc:
            log.warning("cannot list %s (%s): flat lookups use stat()", self._root_real, exc)
            return
        self._flat = names

    def _check_flat(self, name: str) -> str | None:
        if not self._flat_scanned:
            self._scan_flat()
        if self._flat is None:
            return self._check_file(name)
        if name in self._flat:
            return name
        if name in self._flat_links:
            return self._check_file(name)
        return None

    # ------------------------------------------------------------------ lookup
    def resolve(self, ref: str) -> str | None:
        """The local file of ``ref`` as a path relative to ``images_root``, or None.

        Order: mapping file (the ref as given, then its canonical name),
        Wikimedia hashed layout, flat by canonical name, flat by the source's
        own spelling (case kept, URL-encoded, spaces as given or as
        underscores). Every outcome is counted in :attr:`stats`.
        """
        if self.images_root is None or not ref or not ref.strip():
            self.stats["missing"] += 1
            return None
        try:
            name = canonical_name(ref)
        except InputError:
            name = None
            raw = _raw_name(ref).replace("\\", "/")
            escape = raw.startswith("/") or ".." in unquote(raw).split("/")
            self.stats["refused_escape" if escape else "invalid_ref"] += 1
        rel = self._lookup(ref.strip(), name)
        self.stats["resolved" if rel is not None else "missing"] += 1
        return rel

    def _lookup(self, ref: str, name: str | None) -> str | None:
        if self._mapping:
            mapped = self._mapping.get(ref) or (self._mapping.get(name) if name else None)
            if mapped is not None:
                found = self._check_file(mapped)
                if found is not None:
                    self.stats["resolved_mapping"] += 1
                    return found
                self.stats["mapping_missing_file"] += 1
        if name is not None:
            found = self._check_hashed(_hashed(name))
            if found is not None:
                self.stats["resolved_wikimedia"] += 1
                return found
            found = self._check_flat(name)
            if found is not None:
                self.stats["resolved_flat"] += 1
                return found
        raw = _raw_name(ref)
        if raw == name:
            return None
        for candidate in dict.fromkeys((raw, raw.replace(" ", "_"), unquote(raw), unquote(raw).replace(" ", "_"))):
            if candidate == name or not candidate or candidate in {".", ".."} or any(c in candidate for c in "/\\\0"):
                continue
            found = self._check_flat(candidate)
            if found is not None:
                self.stats["resolved_flat_raw"] += 1
                return found
        return None

    def resolve_path(self, rel: str) -> str | None:
        """A source's own relative image path (``ImageRef`` kind ``"path"``) under ``images_root``.

        ``rel`` is taken as given, relative to the root (e.g. ReT-M2KR's
        ``"evqa_kb_images/0/0.jpg"``): it must be lexically safe (relative, no
        ``..``, no drive or NUL; refused and counted ``refused_escape``
        otherwise) and must stay inside the root once symlinks are followed
        (:func:`ragvqa.kb.layout.inside`). Returns the normalised relative
        path (``/`` separators) of an existing file, or None; counted as
        ``resolved``/``resolved_path`` or ``missing``.
        """
        from ragvqa.kb.layout import inside

        found = None
        rel = (rel or "").strip().replace("\\", "/")
        if self.images_root is not None and rel:
            if not _lexically_safe(rel):
                self.stats["refused_escape"] += 1
            else:
                norm = os.path.normpath(rel).replace(os.sep, "/")
                full = inside(self._root_real, norm)
                if full is None:
                    self.stats["refused_escape"] += 1  # a symlink leading out of the root
                elif full.is_file():
                    found = norm
        if found is None:
            self.stats["missing"] += 1
            return None
        self.stats["resolved"] += 1
        self.stats["resolved_path"] += 1
        return found

    def image_file(self, rel: str) -> Path:
        """The absolute path of a relative path returned by :meth:`resolve` or :meth:`resolve_path`."""
        if self.images_root is None:
            raise InputError("no images root is set", hint="pass --images DIR")
        return self.images_root / rel
