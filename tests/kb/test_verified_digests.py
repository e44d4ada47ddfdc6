"""sha256_verified: a digest is computed once per version of a file, and every kind of change
(rewrite, truncation, replacement, touch) makes it computed again; hashlib is the oracle."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

import ragvqa.kb.files as files
from ragvqa.kb.files import VERIFIED_FILE, sha256_verified


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def counted(monkeypatch):
    calls = []
    real = files.sha256_file

    def counting(path):
        calls.append(path.name)
        return real(path)

    monkeypatch.setattr(files, "sha256_file", counting)
    return calls


def test_computed_once_then_remembered(tmp_path, counted):
    path = tmp_path / "part-00000.npy"
    path.write_bytes(os.urandom(3 * (1 << 20) + 5))
    assert sha256_verified(path) == digest(path)
    assert sha256_verified(path) == digest(path)
    assert counted == ["part-00000.npy"]  # hashed once
    record = json.loads((tmp_path / VERIFIED_FILE).read_text())
    st = path.stat()
    assert record["part-00000.npy"] == [st.st_size, st.st_mtime_ns, st.st_ino, digest(path)]


@pytest.mark.parametrize("change", ["rewrite same size", "truncate", "replace by rename", "touch"])
def test_any_change_to_the_file_is_hashed_again(tmp_path, counted, change):
    path = tmp_path / "index.faiss"
    path.write_bytes(b"a" * 4096)
    sha256_verified(path)
    if change == "rewrite same size":  # a flipped byte, written in place
        with open(path, "r+b") as fh:
            fh.seek(100)
            fh.write(b"b")
    elif change == "truncate":
        os.truncate(path, 1000)
    elif change == "replace by rename":
        other = tmp_path / "new"
        other.write_bytes(b"c" * 4096)
        os.replace(other, path)
    else:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert sha256_verified(path) == digest(path)
    assert counted == ["index.faiss", "index.faiss"]


def test_a_damaged_record_or_a_read_only_directory_still_gives_the_digest(tmp_path, counted):
    path = tmp_path / "ids.npy"
    path.write_bytes(b"xyz" * 1000)
    (tmp_path / VERIFIED_FILE).write_text("{not json")
    assert sha256_verified(path) == digest(path)
    (tmp_path / VERIFIED_FILE).write_text(json.dumps({"ids.npy": [1, 2, 3, "forged"]}))  # another file's identity
    assert sha256_verified(path) == digest(path)
    assert len(counted) == 2
    if os.geteuid() != 0:  # root writes anyway
        (tmp_path / VERIFIED_FILE).unlink()
        tmp_path.chmod(0o500)
        try:
            assert sha256_verified(path) == digest(path)
            assert not (tmp_path / VERIFIED_FILE).exists()
        finally:
            tmp_path.chmod(0o700)
