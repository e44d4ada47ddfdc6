"""Weight identities: file digests are computed once per file version; two honestly named functions."""

from __future__ import annotations

import os

from ragvqa.retriever import hashing


def test_second_load_of_a_checkpoint_does_not_rehash(clip_checkpoint, tmp_path, monkeypatch):
    """A ReT-2 checkpoint's weights hash is read from ragvqa's cache dir on the next start
    (memory cache emptied, as in a new process); a changed file (new mtime) is hashed again."""
    import shutil

    from ragvqa.retriever.encoder import ReT2Retriever

    monkeypatch.setenv("RAGVQA_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "ck"
    shutil.copytree(clip_checkpoint, checkpoint)
    reads = []
    real = hashing._hash_file
    monkeypatch.setattr(hashing, "_hash_file", lambda path: reads.append(path) or real(path))
    hashing._memory_cache.clear()

    first = ReT2Retriever.from_pretrained(checkpoint, num_workers=1)
    fp = first.fingerprint()
    first.close()
    assert [p.name for p in reads] == ["model.safetensors"]
    assert hashing.cache_file().is_file()

    hashing._memory_cache.clear()  # a new process: only the disk cache is left
    second = ReT2Retriever.from_pretrained(checkpoint, num_workers=1)
    assert second.fingerprint()["weights_sha256"] == fp["weights_sha256"]
    second.close()
    assert len(reads) == 1  # not hashed again

    weights = checkpoint / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same bytes, new version
    hashing._memory_cache.clear()
    third = ReT2Retriever.from_pretrained(checkpoint, num_workers=1)
    assert third.fingerprint()["weights_sha256"] == fp["weights_sha256"]
    third.close()
    assert len(reads) == 2


def test_file_and_state_dict_digests_are_different_functions(tiny_models, clip_checkpoint):
    """weight_files_sha256 hashes files on disk; state_dict_sha256 hashes tensors in memory."""
    from ragvqa.retriever.modeling import ReT2Model

    files = hashing.weight_files_sha256(clip_checkpoint)
    in_memory = hashing.state_dict_sha256(ReT2Model.from_pretrained(clip_checkpoint))
    assert files != in_memory and len(files) == len(in_memory) == 64
    assert in_memory == hashing.state_dict_sha256(tiny_models["clip"])
