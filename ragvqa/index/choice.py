"""Which Faiss index suits a collection: size and memory-budget rules, no Faiss needed.

Three families, picked by :func:`choose_index` from the collection size and
a memory budget (or named by a Faiss factory string instead):

- ``Flat``: exact search, 4 * D bytes per document (float32 rows).
- ``HNSW32``: graph search over float32 rows, about 4 * D + 256 bytes per
  document; no training, slow to build on CPU, chosen only when the caller
  grants the memory for it.
- ``IVF..,PQ..``: inverted file + product quantisation, trained on a
  sample; ~76 bytes per document at 1M (64 B residual 4-bit fast-scan code,
  8-byte id in the inverted lists, centroids), with exact re-ranking of the
  candidates against the KB's float16 embeddings (memory-mapped). The
  default for large collections whose float16 embeddings fit the memory budget.
- ``IVF.._HNSW32,PQ..x4fsr,Refine(CODE)``: when they do not (15.9M docs =
  24.4 GB), the candidates are re-scored by a second, finer code held in
  memory (SQ8 / SQ6 / SQ4 / PQ192 / PQ96 ..., the best that fits), and the
  best k * 8 (80 for k = 10; k * 32 after a PQ96 code) of those are re-scored
  exactly against the float16 rows read from disk, all at once
  (``rerank_reads="parallel"``: one disk wait per query, the rows are not
  resident).

Figures: bench/RESULTS-index.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ragvqa.errors import InputError

# --- auto-selection thresholds (see choose_index) -------------------------
# --- auto-selection thresholds (see choose_index) -------------------------
#: Up to this many documents, exact search is cheap enough: a Flat scan of
#: 200k x 768 float32 rows is ~600 MB and a few ms per query on 2 CPU cores.
EXACT_MAX_DOCS = 200_000
#: HNSW is considered only up to this size (its CPU build time grows to
#: hours beyond it) and only when an explicit memory budget admits it.
HNSW_MAX_DOCS = 2_000_000
#: HNSW neighbours per node.
HNSW_M = 32
#: Default efSearch for HNSW indexes.
HNSW_EF_SEARCH = 128
#: PQ code size for large collections: 64 bytes per document as 128 4-bit
#: sub-quantizers of the residual (vector - IVF centroid) in Faiss' SIMD
#: "fast-scan" layout (``PQ128x4fsr``): fast on CPU, cheap to train; recall
#: comes from exact re-ranking (bench/RESULTS-index.md, 2026-11-22 tuning:
#: residual 64 B codes re-rank better than non-residual 96 B ones).
PQ_CODE_BYTES = 64
#: PQ indexes over-fetch k * RERANK_K_FACTOR candidates and re-score them
#: exactly against the KB's float16 embeddings (memory-mapped; not index RAM).
RERANK_K_FACTOR = 64
#: Fraction of the IVF lists probed by default (3/32: 96 of 1024 lists at 1M docs).
NPROBE_FRACTION = 3 / 32
#: Fast-scan lists are stored in blocks of this many codes (Faiss ``bbs``): on
#: average half a block of padding per list.
FASTSCAN_BLOCK = 32
#: Byte overhead per document in an IVF index besides the code: the int64 id
#: stored in the inverted list.
IVF_ID_BYTES = 8
#: Faiss fast-scan search implementation used for fewer than 2 * threads queries:
#: threads share each query's probed lists (14 = heap, 15 = reservoir top-k).
FASTSCAN_SPLIT_PROBES_IMPLEM = 15
#: Refine design (collections whose float16 embeddings do not fit the memory
#: budget, e.g. 15.9M docs = 24.4 GB): first-level 4-bit fast-scan residual codes
#: re-scored by a finer code held in memory (Faiss ``IndexRefine``), whose best are then
#: re-scored exactly against float16 rows read from disk (DISK_RERANK_K_FACTOR).
#: (first-level code bytes, refine code), best first. The 64 B first level comes before
#: any finer second code on a 32 B one: at 15.9M with the disk step, 64 B + PQ96 gave
#: recall@10 0.845 / 0.920 / 0.951 (k x 8 / 16 / 32 rows), 32 B + PQ192 only 0.776 / 0.836
#: (its first level loses the true neighbours before the second code sees them).
#: PQ codes keep 4-, 8- or 16-dim sub-vectors at dim 768: Faiss encodes 6- and 12-dim
#: ones on a scalar path, 4-10x slower (PQ128: 0.7 ms per vector, a 75-minute add at 15.9M).
REFINE_LADDER: tuple[tuple[int, str], ...] = (
    (64, "SQ8"), (64, "SQ6"), (64, "SQ4"), (64, "PQ192"), (64, "PQ96"), (32, "PQ192"), (32, "PQ96"),
    (64, "PQ48"), (32, "PQ48"), (16, "PQ96"), (16, "PQ48"), (8, "PQ48"), (8, "PQ24"),
)
#: The searching process's own memory on top of the index (Python, libraries, buffers):
#: 0.19-0.21 GB measured at 15.9M (PQ192: 4.43 GB resident for a 4.23 GB index), so a
#: refine design must fit the budget with 5% to spare.
RESIDENT_MARGIN = 1.05
#: Candidates the first-level codes return per wanted hit, re-scored by the refine code.
#: 2M prefix, SQ4, nprobe 256 of 8192: k_factor 32 -> recall@10 0.780, 128 -> 0.823 (re-scoring
#: 1280 in-memory codes costs well under a millisecond).
REFINE_K_FACTOR = 128
#: The refine design's exact last step: the refine code's best k * factor are re-scored
#: against the float16 rows, read from disk with many reads in flight
#: (ragvqa.index.row_reader: 80 cold rows in ~3.4 ms). The weaker the second code, the
#: more rows it must pass on. 15.9M, nprobe 256 (bench/RESULTS-index.md, 2026-11-30
#: session 4): SQ4 recall@10 0.797 without the step, 0.957 / 0.969 / 0.977 with 4 / 8 / 16
#: (9.2 / 10.1 / 13.5 ms per query); PQ192 0.963 with 8 (10.5 ms); PQ96 0.845 / 0.920 /
#: 0.951 with 8 / 16 / 32 (12.8 / 13.6 / 17.8 ms).
DISK_RERANK_K_FACTORS = {"SQ8": 8, "SQ6": 8, "SQ4": 8, "PQ192": 8, "PQ96": 32, "PQ48": 32, "PQ24": 32}
#: Factor for a second code not in the table.
DISK_RERANK_K_FACTOR = 8
#: Refine k_factor when the disk re-rank follows: the first level returns k * 8 * 32 =
#: 2560 candidates for k = 10.
DISK_REFINE_K_FACTOR = 32
#: HNSW coarse quantizer neighbours for the refine design's many IVF lists
#: (assigning 15.9M vectors to 8192 centroids by brute force is 200 TFLOP).
COARSE_HNSW_M = 32
#: Page cache assumed available for the float16 re-rank source when the caller
#: gives no budget: 8 GiB (an ordinary 16-24 GB machine); beyond it the re-rank
#: would read random rows from disk (bench/RESULTS-index.md, 15.9M section).
DEFAULT_MEMORY_BUDGET = 8 * 1024**3
#: Training sample cap; Faiss' k-means uses at most 256 points per centroid.
MAX_TRAIN_POINTS = 256 * 1024
#: Rows added per chunk while building (bounds the float32 copy: 64k x 768 x 4 = 200 MB).
ADD_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class IndexChoice:
    """What :func:`choose_index` decided.

    Attributes:
        factory: Faiss factory string (metric is always inner product).
        nprobe: inverted lists visited per query (IVF) or None.
        ef_search: HNSW search breadth or None.
        reason: one line saying why (logged and stored in params.json).
        rerank_k_factor: exact re-rank of k * this many candidates against the
            float16 embeddings (0: none).
        refine_k_factor: candidates per wanted hit re-scored by a Refine code.
        rerank_reads: how the re-rank rows are read: "map" (page cache, counted
            in the memory budget) or "parallel" (from disk, many reads in flight).
    """

    factory: str
    nprobe: int | None = None
    ef_search: int | None = None
    reason: str = ""
    rerank_k_factor: int = 0
    refine_k_factor: int | None = None
    rerank_reads: str = "map"


def nlist_for(n: int) -> int:
    """Inverted lists for n vectors: a power of two near sqrt(n), 16..65536.

    sqrt(n) keeps lists ~1k vectors long (1M -> 1024, 15.9M -> 4096): few
    centroids to train and to compare each query with, long contiguous lists
    that suit the fast-scan kernels. Capped at n / 39 (k-means needs 39 points
    per centroid).
    """
    target = max(16.0, min(math.sqrt(n), n / 39.0, 65_536.0))
    return max(1, 2 ** round(math.log2(target)))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query by default: 3/32 of nlist, at least 8 (1M docs: 96 of 1024).

    Clustered embeddings spread a query's true neighbours over many cells; on the
    1M benchmark 96 of 1024 lists with re-ranking of k * 64 candidates gave
    recall@10 0.958 (64 lists: 0.949; 128 lists: 0.961 at 2.4 ms/query).
    """
    return max(1, min(nlist, max(8, round(nlist * NPROBE_FRACTION))))


def estimate_bytes(factory: str, n: int, dim: int) -> int:
    """Approximate index size in bytes for ``n`` vectors of ``dim`` (RAM = file size)."""
    f = factory.replace(" ", "")
    if f in ("Flat", "IDMap,Flat"):
        return 4 * dim * n
    if f.startswith("HNSW"):
        m = int(f[4:].split(",")[0] or HNSW_M)
        storage = 2 * dim if "SQfp16" in f else 4 * dim
        return n * (storage + 2 * m * 4 + 16)
    per_doc = IVF_ID_BYTES
    fixed = 0
    nlist = 0
    for part in f.split(","):
        if part.startswith("Refine(") and part.endswith(")"):
            per_doc += _code_bytes(part[7:-1], dim)
            fixed += 256 * dim * 4 if part[7:].startswith("PQ") else 0  # 8-bit PQ codebooks
        elif part == "RFlat":
            per_doc += 4 * dim
        elif part.startswith("IVF"):
            nlist = int(part[3:].split("_")[0])
            fixed += 4 * dim * nlist
            if "_HNSW" in part:  # the centroids' graph: 2 * M int32 links per centroid on level 0
                fixed += nlist * (2 * int(part.split("_HNSW")[1] or COARSE_HNSW_M) * 4 + 16)
        elif part.startswith("OPQ"):
            fixed += 4 * dim * dim
        elif part.startswith("PQ"):
            spec = part[2:].rstrip("fsr")
            m_text, _, bits = spec.partition("x")
            m = int(m_text)
            code = math.ceil(m * int(bits or 8) / 8)
            per_doc += code
            fixed += m * (2 ** int(bits or 8)) * (dim // m) * 4
            if "fs" in part and nlist:  # fast-scan block padding: half a block per list on average
                fixed += nlist * (FASTSCAN_BLOCK // 2) * code
        elif part == "SQfp16":
            per_doc += 2 * dim
        elif part == "SQ8":
            per_doc += dim
    return n * per_doc + fixed


def _code_bytes(spec: str, dim: int) -> int:
    """Bytes per vector of a refine code spec (``PQ192``, ``PQ96x4``, ``SQ8``, ``SQ4``, ``SQfp16``, ``Flat``)."""
    if spec.startswith("PQ"):
        m_text, _, bits = spec[2:].rstrip("fsr").partition("x")
        return math.ceil(int(m_text) * int(bits or 8) / 8)
    sq_bits = {"SQ8": 8, "SQ6": 6, "SQ4": 4, "SQfp16": 16, "Flat": 32}.get(spec)
    if sq_bits is None:
        raise InputError(f"cannot size refine code {spec!r}")
    return math.ceil(dim * sq_bits / 8)


def nlist_for_refine(n: int) -> int:
    """IVF lists of the refine design: a power of two near 2 * sqrt(n) (15.9M -> 8192, 4M -> 4096).

    More, shorter lists than :func:`nlist_for`: the first-level scan is the
    per-query cost that grows with n, and the HNSW coarse quantizer keeps the
    centroid search cheap. Capped at n / 39 (k-means points per centroid).
    """
    target = max(16.0, min(2 * math.sqrt(n), n / 39.0, 65_536.0))
    return max(1, 2 ** round(math.log2(target)))


def refine_nprobe(nlist: int) -> int:
    """Lists probed by the refine design: 3/128 of nlist, at least 16 (8192 -> 192).

    15.9M, SQ4 second code, disk re-rank k x 8, quiet 2-core box: recall@10 0.954 /
    0.966 / 0.969 at nprobe 128 / 192 / 256 for 7.7 / 9.0 / 10.5 ms per query one at a
    time (bench/RESULTS-index.md, 2026-11-30 session 4): 192 keeps under 10 ms.
    """
    return max(1, min(nlist, max(16, nlist * 3 // 128)))


def resident_bytes(choice: IndexChoice, n: int, dim: int) -> int:
    """Memory a search keeps resident: the index, plus the float16 embeddings' page cache
    (2 * dim B/doc) when it re-ranks against them through the map (rows read from disk
    with ``rerank_reads="parallel"`` are not counted: a few per query, not kept)."""
    mapped = choice.rerank_k_factor > 1 and choice.rerank_reads == "map"
    return estimate_bytes(choice.factory, n, dim) + (2 * dim * n if mapped else 0)


def choose_index(n: int, dim: int, memory_budget_bytes: int | None = None) -> IndexChoice:
    """The auto-selection policy: which index for ``n`` vectors of size ``dim``.

    1. ``n <= EXACT_MAX_DOCS`` (200k) and 4 * dim * n bytes fit the budget:
       ``Flat`` (exact).
    2. An explicit ``memory_budget_bytes`` that admits ``HNSW32`` (about
       4 * dim + 272 bytes per document) and ``n <= HNSW_MAX_DOCS`` (2M):
       ``HNSW32``, efSearch 128 (no training, high recall, slow CPU build).
    3. Otherwise IVF-PQ: nlist a power of two near sqrt(n); 64-byte residual
       codes as ``PQ128x4fsr`` (4-bit fast-scan), smaller codes when the budget
       forces it (PQ96x4fsr, PQ64x4fsr, PQ32x4fsr, PQ16x4fsr), nprobe 3/32 of
       the lists, and exact re-ranking of k * RERANK_K_FACTOR (64) candidates
       against the float16 embeddings. For ~1M docs: ``IVF1024,PQ128x4fsr``,
       nprobe 96, k_factor 64: recall@10 0.958 at 1.7-1.9 ms/query, 76.2 B/doc
       of index on 2 cores (bench/RESULTS-index.md, 2026-11-22 tuning).

    Args:
        n: number of vectors.
        dim: vector size D.
        memory_budget_bytes: the most the index may take in RAM; None = no limit
            beyond the size rules above.
    Raises:
        InputError: no configuration fits the budget.
    """
    if n <= 0:
        raise InputError("cannot build an index over 0 vectors", hint="embed the KB first: ragvqa embed KB_DIR --retriever SPEC")
    budget = memory_budget_bytes if memory_budget_bytes is not None else math.inf
    if n <= EXACT_MAX_DOCS and estimate_bytes("Flat", n, dim) <= budget:
        return IndexChoice("Flat", reason=f"{n} <= {EXACT_MAX_DOCS} docs: exact search")
    hnsw = f"HNSW{HNSW_M}"
    if memory_budget_bytes is not None and n <= HNSW_MAX_DOCS and estimate_bytes(hnsw, n, dim) <= budget:
        return IndexChoice(hnsw, ef_search=HNSW_EF_SEARCH, reason=f"budget admits {hnsw} for {n} docs")
    # The float16 re-rank is fast only while its rows come from the page cache, so the
    # embeddings (2 * dim B/doc) count against the budget (default: DEFAULT_MEMORY_BUDGET).
    resident_budget = memory_budget_bytes if memory_budget_bytes is not None else DEFAULT_MEMORY_BUDGET
    nlist = nlist_for(n)
    for code_bytes in (PQ_CODE_BYTES, 48, 32, 16, 8):
        if dim % (2 * code_bytes) == 0:  # 4-bit fast-scan: 2 sub-quantizers per byte
            factory = f"IVF{nlist},PQ{2 * code_bytes}x4fsr"  # r: residual codes (better re-rank recall)
        elif dim % code_bytes == 0:  # 8-bit sub-quantizers when dim does not split finer
            factory = f"IVF{nlist},PQ{code_bytes}"
        else:
            continue
        choice = IndexChoice(
            factory,
            nprobe=default_nprobe(nlist),
            reason=f"{n} docs: IVF-PQ, {code_bytes} B codes, {nlist} lists, float16 re-rank",
            rerank_k_factor=RERANK_K_FACTOR,
        )
        if resident_bytes(choice, n, dim) <= resident_budget:
            return choice
    # Too large for the float16 re-rank source to stay in memory: a second, finer code in RAM
    # re-scores the first-level candidates. Ordered by how well the code ranks (measured on the
    # 2M prefix of the 15.9M benchmark, bench/RESULTS-index.md: SQ8 ~ exact, SQ6, SQ4, PQ192,
    # PQ96); the first that fits the budget (default DEFAULT_MEMORY_BUDGET) wins.
    nlist = nlist_for_refine(n)
    for base_bytes, refine in REFINE_LADDER:
        code = _code_bytes(refine, dim)
        if dim % (2 * base_bytes) or (refine.startswith("PQ") and dim % code):
            continue
        factory = f"IVF{nlist}_HNSW{COARSE_HNSW_M},PQ{2 * base_bytes}x4fsr,Refine({refine})"
        if estimate_bytes(factory, n, dim) * RESIDENT_MARGIN <= resident_budget:
            rerank = DISK_RERANK_K_FACTORS.get(refine, DISK_RERANK_K_FACTOR)
            # A weak second code cannot make 10 ms anyway (PQ96: 17-18 ms): recall first, 1/32 of
            # the lists (15.9M, PQ96, k x 32 rows: 0.946 at nprobe 192, 0.951 at 256).
            nprobe = refine_nprobe(nlist) if rerank <= DISK_RERANK_K_FACTOR else max(16, min(nlist, nlist // 32))
            return IndexChoice(
                factory,
                nprobe=nprobe,
                reason=(f"{n} docs: float16 embeddings ({2 * dim * n / 1e9:.1f} GB) exceed the memory budget; "
                        f"IVF-PQ {base_bytes} B codes + in-memory {refine} refine codes ({code} B), {nlist} lists, "
                        f"exact re-rank of k x {rerank} rows read from disk"),
                refine_k_factor=DISK_REFINE_K_FACTOR,
                rerank_k_factor=rerank,
                rerank_reads="parallel",
            )
    raise InputError(
        f"no index fits {memory_budget_bytes} bytes for {n} vectors of dim {dim}",
        hint="raise --memory-budget or pass a factory string",
    )



def parse_bytes(text: str | int) -> int:
    """A size in bytes from ``4G``, ``4GB`` (10^9), ``4GiB`` (2^30), ``500M``, ``1.5T`` or a plain integer.

    Raises:
        InputError: not a positive size.
    """
    if isinstance(text, int):
        value = text
    else:
        t = text.strip().upper().replace(" ", "")
        units = {"K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
                 "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}
        number, scale = t, 1
        for suffix in sorted(units, key=len, reverse=True):
            for tail in (suffix + "B", suffix):
                if t.endswith(tail):
                    number, scale = t[: -len(tail)], units[suffix]
                    break
            if scale != 1:
                break
        if number.endswith("B"):
            number = number[:-1]
        try:
            value = int(float(number) * scale)
        except ValueError:
            raise InputError(f"not a size: {text!r}", hint="e.g. 4G, 4GiB, 500M or a number of bytes") from None
    if value <= 0:
        raise InputError(f"a size must be positive, got {text!r}")
    return value


def train_points_for(factory: str, n: int) -> int:
    """Training sample size: 64 points per IVF list (at least 2^16 for PQ codebooks), capped."""
    nlist = 0
    for part in factory.split(","):
        if part.startswith("IVF"):
            nlist = int(part[3:].split("_")[0])
    want = max(64 * nlist, 65_536 if "PQ" in factory else 0)
    return min(n, want, MAX_TRAIN_POINTS)



def is_refine(factory: str) -> bool:
    """Whether a factory string makes a Faiss refine index (``...,Refine(X)`` or ``...,RFlat``)."""
    f = factory.replace(" ", "")
    return "Refine(" in f or f.endswith(",RFlat")


def is_pq(factory: str) -> bool:
    """Whether a factory string makes a lossy product-quantised index (worth re-ranking)."""
    return any(part.startswith(("PQ", "OPQ")) for part in factory.replace(" ", "").split(","))



__all__ = [
    "DEFAULT_MEMORY_BUDGET", "DISK_RERANK_K_FACTORS", "EXACT_MAX_DOCS", "REFINE_K_FACTOR", "RESIDENT_MARGIN", "RERANK_K_FACTOR", "IndexChoice", "choose_index",
    "default_nprobe", "estimate_bytes", "is_pq", "parse_bytes", "is_refine", "nlist_for", "nlist_for_refine", "refine_nprobe",
    "resident_bytes", "train_points_for",
]
