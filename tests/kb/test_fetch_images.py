"""``ragvqa fetch-images`` against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from ragvqa.errors import KnowledgeBaseError
from ragvqa.kb.fetch import (
    FAILURES,
    LEDGER,
    PARTIAL,
    REPORT,
    STATE_DIR,
    FetchConfig,
    _parse_retry_after,
    collect_missing_refs,
    download_refs,
    fetch_images,
    source_url,
)
from ragvqa.kb.files import atomic_write_json
from ragvqa.kb.image_paths import update_kb_image_paths
from ragvqa.kb.images import canonical_name, wikimedia_relpath
from ragvqa.kb.layout import DOCUMENTS_DIR, MANIFEST
from ragvqa.kb.store import KnowledgeBase, write_document_shard
from ragvqa.types import Document

GOOD = ["Buzz_Aldrin.png", "Apollo_11.png", "富士山.png", "Tower_(London).png", "Flaky.png", "Busy.png"]
BAD = {"Gone.png": 404, "Corrupt.png": None, "Slow.png": None, "Big.png": None}


def png_bytes(name: str) -> bytes:
    """A small PNG whose colour depends on the name."""
    h = hashlib.md5(name.encode()).digest()
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (h[0], h[1], h[2])).save(buf, format="PNG")
    return buf.getvalue()


class ImageServer:
    """A thread serving generated PNGs and misbehaving endpoints on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: collections.Counter = collections.Counter()  # file name -> count
        self.user_agents: set[str] = set()
        self.lock = threading.Lock()
        self.release = threading.Event()  # frees the slow endpoint at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                name = unquote(self.path.rsplit("/", 1)[-1])
                with server.lock:
                    server.requests[name] += 1
                    count = server.requests[name]
                    server.user_agents.add(self.headers.get("User-Agent", ""))
                if name == "Flaky.png" and count <= 2:
                    return self._send(503, b"try later")
                if name == "Busy.png" and count == 1:
                    return self._send(429, b"slow down", {"Retry-After": "1"})
                if name == "Gone.png" or name.startswith("Missing"):
                    return self._send(404, b"no such file")
                if name == "Corrupt.png":
                    return self._send(200, b"<html>not an image</html>", {"Content-Type": "image/png"})
                if name == "Slow.png":  # answers long after any client timeout
                    server.release.wait(30)
                    return self._send(200, png_bytes(name))
                if name == "Big.png":
                    return self._send(200, png_bytes(name) + b"\0" * 200_000)
                if name.endswith(".svg.png"):  # a rendered SVG thumbnail
                    return self._send(200, png_bytes(name))
                return self._send(200, png_bytes(name))

            def _send(self, code: int, body: bytes, headers: dict | None = None):
                try:
                    self.send_response(code)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    srv = ImageServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # The test server is on loopback; never route through a proxy.
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]:
        monkeypatch.delenv(var, raising=False)


def make_kb(kb_dir: Path, refs: list[str | None], *, images_root: Path | None = None, image_paths: dict | None = None,
            extra_manifest: dict | None = None) -> Path:
    """A finished KB with one document per ref, split over two shards."""
    image_paths = image_paths or {}
    docs = [
        Document(i, f"p{i // 2}", f"Page {i // 2}", "", i % 2, f"Section {i}", f"text {i}", ref, image_paths.get(ref), "section" if ref else None)
        for i, ref in enumerate(refs)
    ]
    half = len(docs) // 2
    shards = []
    for n, part in enumerate([docs[:half], docs[half:]]):
        name = f"part-{n:05d}.parquet"
        write_document_shard(kb_dir / DOCUMENTS_DIR / name, part)
        shards.append({"file": name, "rows": len(part)})
    manifest = {"status": "complete", "images_root": str(images_root) if images_root else None, "shards": shards}
    atomic_write_json(kb_dir / MANIFEST, {**manifest, **(extra_manifest or {})})
    return kb_dir


def url(name: str) -> str:
    rel = wikimedia_relpath(name)
    return f"https://upload.wikimedia.org/wikipedia/commons/{rel}"


def fast_config(server, **kw) -> FetchConfig:
    base = dict(concurrency=3, rate_limit=0, retries=2, backoff_base_s=0.01, backoff_max_s=0.05,
                timeout_s=1.0, max_bytes=100_000, base_url=server.base_url, contact="https://example.invalid/ragvqa-tests")
    base.update(kw)
    return FetchConfig(**base)


def all_refs() -> list[str | None]:
    # Names and URLs mixed, duplicates, a thumb URL, a text-only doc, an SVG, a video.
    return [
        "Buzz Aldrin.png",
        url("Apollo_11.png"),
        "File:富士山.png",
        "https://upload.wikimedia.org/wikipedia/commons/thumb/x/xx/Tower_%28London%29.png/220px-Tower_%28London%29.png",
        "Flaky.png",
        "Busy.png",
        None,
        "Buzz_Aldrin.png",  # same file as the first ref
        "Gone.png",
        "Corrupt.png",
        "Slow.png",
        "Big.png",
        "Map of Europe.svg",
        "Launch video.webm",
        "Buzz Aldrin.png",
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_source_url_and_retry_after():
    cfg = FetchConfig(thumb_width=64)
    assert source_url("Example.jpg", cfg) == "https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg"
    svg = source_url("Map of Europe.svg", cfg)
    rel = wikimedia_relpath("Map_of_Europe.svg")
    assert svg == f"https://upload.wikimedia.org/wikipedia/commons/thumb/{rel}/64px-Map_of_Europe.svg.png"
    mirror = FetchConfig(base_url="http://127.0.0.1:9/mirror/")
    assert source_url("//upload.wikimedia.org/wikipedia/en/a/ab/X.jpg?x=1", mirror) == "http://127.0.0.1:9/mirror/wikipedia/en/a/ab/X.jpg?x=1"
    assert _parse_retry_after("7") == 7.0
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _parse_retry_after("soon") is None and _parse_retry_after(None) is None
    assert "ragvqa/" in cfg.user_agent() and "httpx/" in cfg.user_agent()


def test_collect_missing_refs(tmp_path):
    kb = make_kb(tmp_path / "kb", ["A.png", None, "B.png", "A.png", "C.png"], images_root=tmp_path, image_paths={"C.png": "C.png"})
    refs, counts = collect_missing_refs(kb)
    assert refs == ["A.png", "B.png"]
    assert counts["documents"] == 5 and counts["documents_with_ref"] == 4 and counts["documents_missing_image"] == 3


def test_fetch_downloads_retries_reports_and_resumes(tmp_path, server):
    server.reset()
    kb = make_kb(tmp_path / "kb", all_refs())
    out = tmp_path / "images"
    summary = fetch_images(kb, out, fast_config(server, thumb_width=64))
    c = summary["counts"]
    assert summary["status"] == "complete"
    assert summary["kb_counts"]["refs_missing_distinct"] == 13
    # 6 good + the SVG rendering land in the hashed layout, decodable.
    assert c["downloaded"] == 7
    for name in GOOD + ["Map_of_Europe.svg"]:
        path = out / wikimedia_relpath(name)
        assert path.is_file(), name
        with Image.open(path) as im:
            assert im.format == "PNG"
    assert (out / wikimedia_relpath("Buzz_Aldrin.png")).read_bytes() == png_bytes("Buzz_Aldrin.png")
    # Retries: Flaky twice (503), Busy once (429 + Retry-After), Slow twice (timeouts).
    assert server.requests["Flaky.png"] == 3 and server.requests["Busy.png"] == 2
    assert server.requests["Slow.png"] == 3
    assert c["retries"] == 2 + 1 + 2
    assert server.requests["Buzz_Aldrin.png"] == 1  # duplicates fetched once
    assert c["duplicate_name"] == 1  # "Buzz Aldrin.png" vs "Buzz_Aldrin.png"
    assert server.requests["Launch_video.webm"] == 0 and c["non_image_type"] == 1
    assert all(ua.startswith("ragvqa/") and "example.invalid" in ua for ua in server.user_agents)
    # Ledger: one line per stored file, sha256 of its bytes.
    ledger = read_jsonl(out / STATE_DIR / LEDGER)
    assert len(ledger) == 7
    for row in ledger:
        data = (out / row["path"]).read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["bytes"] == len(data)
        assert row["path"] == wikimedia_relpath(row["ref"])
    # Failures: ref, url, status, error.
    failures = {canonical_name(f["ref"]): f for f in read_jsonl(out / STATE_DIR / FAILURES)}
    assert set(failures) == {"Gone.png", "Corrupt.png", "Slow.png", "Big.png", "Launch_video.webm"}
    assert failures["Gone.png"]["status"] == 404 and failures["Gone.png"]["permanent"]
    assert failures["Gone.png"]["url"].startswith(server.base_url + "/wikipedia/commons/")
    assert "not an image" in failures["Corrupt.png"]["error"] and failures["Corrupt.png"]["permanent"]
    assert failures["Slow.png"]["error"].startswith("timeout") and not failures["Slow.png"]["permanent"]
    assert failures["Slow.png"]["attempts"] == 3
    assert "too large" in failures["Big.png"]["error"]
    assert c["failed"] == 4
    report = json.loads((out / STATE_DIR / REPORT).read_text())
    assert report["status"] == "complete" and report["counts"]["downloaded"] == 7
    assert not (out / STATE_DIR / PARTIAL).exists()
    assert not list(out.rglob("*.part")) and not list(out.rglob("*.tmp"))

    # Second run: nothing is downloaded again; permanent failures are not re-requested,
    # only the transient one (the timeout) is tried again.
    server.reset()
    again = fetch_images(kb, out, fast_config(server, thumb_width=64))["counts"]
    assert again.get("downloaded", 0) == 0 and again["already_present"] == 7
    assert again["skipped_previous_failure"] == 3  # Gone, Corrupt, Big
    assert set(server.requests) == {"Slow.png"}
    assert len(read_jsonl(out / STATE_DIR / LEDGER)) == 7
    assert {canonical_name(f["ref"]) for f in read_jsonl(out / STATE_DIR / FAILURES)} == set(failures)

    # --retry-failed asks again for the permanent ones.
    server.reset()
    fetch_images(kb, out, fast_config(server, thumb_width=64, retry_failed=True, retries=0))
    assert {"Gone.png", "Corrupt.png", "Big.png"} <= set(server.requests)


def test_interrupted_run_resumes(tmp_path, server):
    server.reset()
    names = [f"Plant_{i}.png" for i in range(8)]
    out = tmp_path / "images"
    # Left-overs of a killed run: a temp file, a good file nobody recorded, a broken file.
    stale = out / STATE_DIR / PARTIAL / "123-abc.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    adopted = out / wikimedia_relpath(names[0])
    adopted.parent.mkdir(parents=True, exist_ok=True)
    adopted.write_bytes(png_bytes(names[0]))
    broken = out / wikimedia_relpath(names[1])
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(png_bytes(names[1])[:30])

    stop = threading.Event()
    seen: list[str] = []

    def on_result(res):
        seen.append(res.ref)
        if len(seen) == 2:
            stop.set()  # like Ctrl-C after two downloads

    first = download_refs(names, out, fast_config(server, concurrency=1), stop=stop, on_result=on_result)
    assert first["status"] == "interrupted"
    # The worker may finish the download in flight when the stop comes.
    done_first = first["counts"]["downloaded"]
    assert done_first >= 2 and first["counts"]["cancelled"] == 7 - done_first > 0
    assert first["counts"]["already_present"] == 1  # the adopted file, checked and recorded
    assert not stale.exists()
    ledger = read_jsonl(out / STATE_DIR / LEDGER)
    assert [r["path"] for r in ledger if r.get("found_local")] == [wikimedia_relpath(names[0])]

    second = download_refs(names, out, fast_config(server, concurrency=2))
    assert second["status"] == "complete"
    assert second["counts"]["downloaded"] == 7 - done_first
    assert second["counts"]["already_present"] == 1 + done_first
    assert server.requests[names[0]] == 0  # adopted, never fetched
    # What the first run stored is never requested again; a download cut by the
    # stop may have been requested once before its retry.
    stored_first = {r["ref"] for r in ledger if not r.get("found_local")}
    assert len(stored_first) == done_first
    assert all(server.requests[n] == 1 for n in stored_first)
    assert all(1 <= server.requests[n] <= 2 for n in names[1:])
    for name in names:
        assert (out / wikimedia_relpath(name)).read_bytes() == png_bytes(name)


def test_cli_fetch_then_update_kb(tmp_path, server, capsys):
    from ragvqa.cli import main

    server.reset()
    refs = ["Buzz Aldrin.png", None, url("Apollo_11.png"), "Missing_one.png", "Buzz_Aldrin.png"]
    # The build's counts and missing-image list (names from ragvqa.kb.build).
    kb = make_kb(tmp_path / "kb", refs, extra_manifest={
        "counts": {"image_refs_missing": 4, "documents_with_local_image": 0},
        "raw_counts": {"image_refs_missing": 4, "documents_local_image": 0},
    })
    (kb / "missing_images.jsonl").write_text("".join(
        json.dumps({"image_ref": r, "first_doc_id": i, "page_title": "t", "documents": 1}) + "\n"
        for i, r in enumerate(refs) if r and r != "Buzz_Aldrin.png"
    ))
    out = tmp_path / "images"
    argv = ["fetch-images", str(kb), "--out", str(out), "--base-url", server.base_url, "--rate", "0",
            "--retries", "0", "--timeout", "2", "--no-progress", "--contact", "https://example.invalid/x", "--update-kb"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert '"downloaded": 2' in text and "KB updated" in text and "failures" in text
    loaded = KnowledgeBase(kb)
    assert loaded.images_root == out.resolve()
    docs = loaded.get(range(len(refs)))
    assert [d.image_path for d in docs] == [
        wikimedia_relpath("Buzz_Aldrin.png"), None, wikimedia_relpath("Apollo_11.png"), None, wikimedia_relpath("Buzz_Aldrin.png")
    ]
    assert loaded.image_file(docs[0]).read_bytes() == png_bytes("Buzz_Aldrin.png")
    assert loaded.manifest["image_updates"][-1]["documents_updated"] == 3
    assert loaded.manifest["counts"] == {"image_refs_missing": 1, "documents_with_local_image": 3}
    assert loaded.manifest["raw_counts"] == {"image_refs_missing": 1, "documents_local_image": 3}
    assert [r["image_ref"] for r in read_jsonl(kb / "missing_images.jsonl")] == ["Missing_one.png"]
    # Rerun: nothing to download, nothing left to update except the missing one.
    server.reset()
    assert main(argv) == 0
    assert set(server.requests) <= {"Missing_one.png"} and server.requests["Missing_one.png"] == 0


def test_update_kb_refusals(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    kb = make_kb(tmp_path / "kb", ["A.png"], images_root=other)
    with pytest.raises(KnowledgeBaseError, match="keeps its images in"):
        update_kb_image_paths(kb, tmp_path / "images")
    kb2 = make_kb(tmp_path / "kb2", ["A.png"])
    (kb2 / "embeddings").mkdir()
    (kb2 / "embeddings" / "manifest.json").write_text("{}")
    with pytest.raises(KnowledgeBaseError, match="already embedded"):
        update_kb_image_paths(kb2, tmp_path / "images")


def test_fetch_refuses_unfinished_kb(tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    atomic_write_json(kb / MANIFEST, {"status": "in_progress", "shards": []})
    with pytest.raises(KnowledgeBaseError, match="not finished"):
        fetch_images(kb, tmp_path / "images")


def test_ctrl_c_writes_the_report_and_a_rerun_finishes(tmp_path, server):
    server.reset()
    names = [f"Bird_{i}.png" for i in range(6)]
    out = tmp_path / "images"

    def on_result(res):
        raise KeyboardInterrupt  # Ctrl-C right after the first stored file

    with pytest.raises(KeyboardInterrupt):
        download_refs(names, out, fast_config(server, concurrency=1), on_result=on_result)
    report = json.loads((out / STATE_DIR / REPORT).read_text())
    assert report["status"] == "interrupted" and report["counts"]["downloaded"] >= 1
    assert report["counts"]["downloaded"] + report["counts"]["cancelled"] == 6
    assert len(read_jsonl(out / STATE_DIR / LEDGER)) == report["counts"]["downloaded"]
    rerun = download_refs(names, out, fast_config(server))
    assert rerun["status"] == "complete"
    assert rerun["counts"]["downloaded"] == 6 - report["counts"]["downloaded"]
    assert all((out / wikimedia_relpath(n)).is_file() for n in names)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from ragvqa.cli import main

    assert main(["fetch-images", str(tmp_path / "no_kb"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "knowledge base directory not found" in err and "ragvqa build-kb" in err and err.count("\n") == 1
    kb = make_kb(tmp_path / "kb", ["A.png"])
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["fetch-images", str(kb), "--out", str(blocker), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot use") and len(err.strip().splitlines()) == 1
