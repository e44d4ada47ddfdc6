"""Checkpoint files: the same weights and tokenizer always give the same bytes.

The killed-run test (test_train.py) compares a resumed run's model.safetensors
with an uninterrupted run's byte for byte. safetensors 0.8 writes the
header's ``__metadata__`` keys in a Rust HashMap's random order, a new one
for every save, so bit-identical weights came out as two different files
about half the time (in or out of the whole suite); ``save_pretrained`` writes the
keys sorted.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ragvqa.errors import ModelError
from ragvqa.retriever.checkpoint import canonical_safetensors_header, save_pretrained


def _header(path: Path) -> bytes:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + size]


@pytest.fixture(scope="module")
def tiny_model():
    from ragvqa.retriever.modeling import ReT2Model
    from tests.retriever.conftest import tiny_config

    torch.manual_seed(0)
    return ReT2Model(tiny_config("clip"))


def test_the_same_weights_save_to_the_same_bytes(tiny_model, tmp_path):
    # 12 saves in one process: with the writer's random metadata order alone, all 12 agree
    # with a probability of about 1 in 2,000
    digests = set()
    for n in range(12):
        directory = save_pretrained(tiny_model, tmp_path / f"m{n}")
        digests.add(hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    assert _header(tmp_path / "m0" / "model.safetensors").startswith(
        b'{"__metadata__":{"architecture":"ret2","format":"pt"},')


def test_the_canonical_header_changes_only_the_metadata_order(tmp_path):
    tensors = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(3, dtype=torch.int64)}
    metadata = {"format": "pt", "architecture": "ret2", "zeta": "é/ü"}
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    size = len(_header(path))
    header = json.loads(_header(path))
    # write the header in a known non-canonical order (as the HashMap may), same length
    shuffled = {"__metadata__": dict(reversed(sorted(metadata.items())))}
    shuffled.update((k, v) for k, v in header.items() if k != "__metadata__")
    text = json.dumps(shuffled, separators=(",", ":"), ensure_ascii=False).encode()
    data = bytearray(path.read_bytes())
    data[8 : 8 + size] = text + b" " * (size - len(text))
    path.write_bytes(bytes(data))
    assert json.loads(_header(path)) == header

    assert canonical_safetensors_header(path) is True
    assert list(json.loads(_header(path))["__metadata__"]) == ["architecture", "format", "zeta"]
    assert json.loads(_header(path)) == header and len(path.read_bytes()) == len(data)
    assert path.read_bytes()[8 + size :] == bytes(data[8 + size :])  # the tensors' bytes are untouched
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    before = path.read_bytes()
    assert canonical_safetensors_header(path) is False and path.read_bytes() == before  # already canonical
    # no metadata: nothing to do; not safetensors: a ModelError
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    assert canonical_safetensors_header(tmp_path / "plain.safetensors") is False
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ModelError):
        canonical_safetensors_header(tmp_path / "junk.safetensors")
