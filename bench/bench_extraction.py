"""Benchmark: MediaWiki dump text extraction against gensim, and multistream parallelism.

Input: the real English Wikipedia pages-articles sample that ships in gensim
(206 pages, 5.7M wikitext characters). Three measurements, each against a
baseline run in the same process on the same input, interleaved and repeated
(best and median reported):

1. end to end, one core: gensim ``extract_pages`` + ``filter_wiki`` (what
   gensim's WikiCorpus runs before tokenising) vs ``ragvqa`` ``iter_pages``
   (decompress, XML, namespace/redirect filtering, sections, images, clean
   text) on the plain ``.xml.bz2``. Ratio = gensim time / ragvqa time
   (> 1: ragvqa is faster). CPU time of this process is reported too (robust
   to other load on the box).
2. cleaner only: ``filter_wiki`` vs ``parse_wikitext`` on the same page texts.
3. multistream: the sample's pages repeated ``--copies`` times, repacked as a
   multistream dump with ``--pages-per-stream`` pages per bz2 stream plus
   its index; ``iter_pages(workers=1)`` vs ``workers=N``.

Usage: .venv/bin/python bench/bench_extraction.py [--repeat 3] [--copies 4]
       [--pages-per-stream 25] [--workers 2] [--skip-parallel | --parallel-only]
"""

from __future__ import annotations

import argparse
import bz2
import collections
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ragvqa.kb.sources import mediawiki
from ragvqa.kb.sources.mediawiki import iter_pages
from ragvqa.kb.sources.mediawiki_writer import write_multistream
from ragvqa.kb.wikitext import parse_wikitext


def sample_path() -> Path:
    import gensim

    return (
        Path(gensim.__file__).parent
        / "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    )


def run_gensim(path: Path) -> tuple[int, int]:
    """gensim's own extraction: (pages, output characters)."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    pages = chars = 0
    with bz2.BZ2File(path) as handle:
        for _title, text, _pid in extract_pages(handle, filter_namespaces=("0",)):
            chars += len(filter_wiki(text))
            pages += 1
    return pages, chars


def run_ragvqa(path: Path, workers: int = 1) -> tuple[int, int, int]:
    """ragvqa's extraction: (pages yielded, output characters, images)."""
    counts: collections.Counter = collections.Counter()
    pages = chars = images = 0
    for page in iter_pages(path, counts=counts, workers=workers):
        pages += 1
        for section in page.sections:
            chars += len(section.text)
            images += len(section.images)
    return pages, chars, images


def timed(fn, *args):
    """(wall s, CPU s of this process and its reaped children, result)."""

    def cpu_now() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    wall, cpu = time.perf_counter(), cpu_now()
    result = fn(*args)
    return time.perf_counter() - wall, cpu_now() - cpu, result


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def machine_capacity(workers: int, n: int = 3_000_000) -> float:
    """Speedup the box offers right now: a pure-Python CPU loop run once in this process
    vs ``workers`` copies at once in a process pool (2.0 on two idle cores)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_burn, [1000] * workers))  # start the workers first
        start = time.perf_counter()
        _burn(n)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(_burn, [n] * workers))
        together = time.perf_counter() - start
    return workers * alone / together


def wikitext_chars(path: Path) -> tuple[int, list[tuple[str, str]]]:
    from gensim.corpora.wikicorpus import extract_pages

    with bz2.BZ2File(path) as handle:
        texts = [(t, x) for t, x, _ in extract_pages(handle)]
    return sum(len(x) for _, x in texts), texts


def build_repeated_multistream(src: Path, out_dir: Path, copies: int, per_stream: int) -> Path:
    """The sample's pages ``copies`` times (ids made unique) as a multistream dump."""
    with bz2.open(src, "rb") as handle:
        data = handle.read()
    first = data.index(b"  <page>")
    last = data.rindex(b"</page>") + len(b"</page>\n")
    header, body, footer = data[:first], data[first:last], data[last:]
    plain = out_dir / "repeated.xml"
    with open(plain, "wb") as out:
        out.write(header)
        for copy in range(copies):
            # Distinct page ids per copy, so the pages are distinguishable.
            out.write(body.replace(b"<ns>0</ns>\n    <id>", b"<ns>0</ns>\n    <id>%d" % copy))
        out.write(footer)
    dst = out_dir / "enwiki-bench-pages-articles-multistream.xml.bz2"
    write_multistream(plain, dst, pages_per_stream=per_stream)
    plain.unlink()
    return dst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--pages-per-stream", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-parallel", action="store_true")
    parser.add_argument("--parallel-only", action="store_true", help="only part 3")
    args = parser.parse_args()

    path = sample_path()
    total_chars, texts = wikitext_chars(path)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}"
    )
    print(f"input: {path.name}: {len(texts)} pages, {total_chars:,} wikitext characters")

    if args.parallel_only:
        return parallel(args, path, total_chars)
    # 1. end to end, one core
    g_wall, g_cpu, r_wall, r_cpu = [], [], [], []
    for _ in range(args.repeat):
        w, c, (g_pages, g_chars) = timed(run_gensim, path)
        g_wall.append(w)
        g_cpu.append(c)
        w, c, (r_pages, r_chars, r_images) = timed(run_ragvqa, path)
        r_wall.append(w)
        r_cpu.append(c)
    print("\n## 1. end to end on one core (plain .xml.bz2)")
    print(
        f"gensim extract_pages+filter_wiki: best {min(g_wall):.3f} s wall / {min(g_cpu):.3f} s CPU "
        f"({g_pages} pages, {g_chars:,} chars out, no sections, no images)"
    )
    print(
        f"ragvqa iter_pages:                best {min(r_wall):.3f} s wall / {min(r_cpu):.3f} s CPU "
        f"({r_pages} pages, {r_chars:,} chars out, {r_images} images)"
    )
    print(
        f"ratio (gensim / ragvqa): wall best {min(g_wall) / min(r_wall):.2f}x, "
        f"median {statistics.median(g_wall) / statistics.median(r_wall):.2f}x; "
        f"CPU best {min(g_cpu) / min(r_cpu):.2f}x"
    )
    print(
        f"throughput per core: ragvqa {total_chars / min(r_cpu) / 1e6:.2f}M wikitext chars/s CPU, "
        f"gensim {total_chars / min(g_cpu) / 1e6:.2f}M chars/s CPU"
    )

    # 2. cleaner only
    from gensim.corpora.wikicorpus import filter_wiki

    f_cpu, p_cpu = [], []
    for _ in range(args.repeat):
        t = time.process_time()
        for _title, text in texts:
            filter_wiki(text)
        f_cpu.append(time.process_time() - t)
        t = time.process_time()
        for title, text in texts:
            parse_wikitext(title, text)
        p_cpu.append(time.process_time() - t)
    print("\n## 2. cleaner only (all 206 page texts, no XML, no bz2)")
    print(
        f"filter_wiki {min(f_cpu):.3f} s, parse_wikitext {min(p_cpu):.3f} s CPU: "
        f"ratio {min(f_cpu) / min(p_cpu):.2f}x; parse_wikitext "
        f"{total_chars / min(p_cpu) / 1e6:.2f}M chars/s"
    )

    if args.skip_parallel:
        return 0
    return parallel(args, path, total_chars)


_TASK_LOG: str | None = None


def _logged_range_task(*task):
    """Wraps the pool task of ragvqa's multistream reader: appends "pid cpu_seconds" per task."""
    start = time.process_time()
    result = _ORIGINAL_RANGE_TASK(*task)
    with open(_TASK_LOG, "a") as log:
        log.write(f"{os.getpid()} {time.process_time() - start}\n")
    return result


_ORIGINAL_RANGE_TASK = mediawiki._range_task


def cpu_split(dump: Path, workers: int, log: Path) -> dict[int, float]:
    """CPU seconds each worker process spent in reading tasks, for one workers=N run.

    Relies on the "fork" start method (this script runs single-threaded), so the
    workers inherit the wrapped task function.
    """
    global _TASK_LOG
    _TASK_LOG = str(log)
    log.write_text("")
    mediawiki._range_task = _logged_range_task
    try:
        run_ragvqa(dump, workers)
    finally:
        mediawiki._range_task = _ORIGINAL_RANGE_TASK
    per_worker: dict[int, float] = collections.defaultdict(float)
    for line in log.read_text().split("\n"):
        if line:
            pid, seconds = line.split()
            per_worker[int(pid)] += float(seconds)
    return dict(per_worker)


def parallel(args: argparse.Namespace, path: Path, total_chars: int) -> int:
    """3. multistream, workers=1 vs workers=N."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = build_repeated_multistream(path, Path(tmp), args.copies, args.pages_per_stream)
        one, many, cpu_one, cpu_many, loads, capacity = [], [], [], [], [], []
        for _ in range(args.repeat):
            loads.append(os.getloadavg()[0])
            capacity.append(machine_capacity(args.workers))
            w1, c1, res1 = timed(run_ragvqa, dump, 1)
            wn, cn, resn = timed(run_ragvqa, dump, args.workers)
            cpu_one.append(c1)
            cpu_many.append(cn)
            if res1 != resn:
                print(f"MISMATCH between workers=1 {res1} and workers={args.workers} {resn}")
                return 1
            one.append(w1)
            many.append(wn)
        print(
            f"\n## 3. multistream ({args.copies} copies = {res1[0]} articles, "
            f"{total_chars * args.copies:,} wikitext chars, {args.pages_per_stream} pages/stream, "
            f"{dump.stat().st_size / 1e6:.1f} MB)"
        )
        print(f"workers=1: best {min(one):.3f} s, runs {', '.join(f'{x:.2f}' for x in one)}")
        print(
            f"workers={args.workers}: best {min(many):.3f} s, runs {', '.join(f'{x:.2f}' for x in many)}"
        )
        print(
            f"speedup: best {min(one) / min(many):.2f}x, median "
            f"{statistics.median(one) / statistics.median(many):.2f}x, "
            f"per-run {', '.join(f'{a / b:.2f}' for a, b in zip(one, many, strict=True))}"
        )
        print(
            f"speedup the box itself offered for {args.workers} processes during these runs "
            f"(CPU loop alone vs {args.workers} at once): "
            f"{', '.join(f'{x:.2f}' for x in capacity)}"
        )
        print(
            f"CPU seconds (main + workers): workers=1 {min(cpu_one):.2f}, workers={args.workers} "
            f"{min(cpu_many):.2f}: parallel overhead {min(cpu_many) / min(cpu_one) - 1:+.1%}; "
            f"1-minute load average before each pair: {', '.join(f'{x:.1f}' for x in loads)}"
        )
        split = cpu_split(dump, args.workers, Path(tmp) / "tasks.log")
        busiest = max(split.values())
        print(
            f"CPU split of one workers={args.workers} run: "
            f"{', '.join(f'{v:.2f}' for v in sorted(split.values()))} s per worker "
            f"({len(split)} workers); whole job in one process {min(cpu_one):.2f} s CPU -> "
            f"speedup on {args.workers} free cores (projected from the split) "
            f"{min(cpu_one) / busiest:.2f}x"
        )
        print(
            f"throughput: workers=1 {total_chars * args.copies / min(one) / 1e6:.2f}M chars/s, "
            f"workers={args.workers} {total_chars * args.copies / min(many) / 1e6:.2f}M chars/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
