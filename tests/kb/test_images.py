"""Image references -> local files: canonical names, layouts, mapping files, escapes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from ragvqa.errors import DataError, InputError
from ragvqa.kb import images as images_mod
from ragvqa.kb.images import ImageResolver, canonical_name, commons_url, wikimedia_relpath


def _png(path: Path, color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format="PNG")
    return path


def _hashed(root: Path, name: str) -> Path:
    return _png(root / wikimedia_relpath(name))


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Buzz Aldrin.jpg", "Buzz_Aldrin.jpg"),
        ("File:Buzz Aldrin.jpg", "Buzz_Aldrin.jpg"),
        ("file:buzz aldrin.jpg", "Buzz_aldrin.jpg"),
        ("IMAGE:  Buzz__Aldrin .jpg ", "Buzz_Aldrin_.jpg"),
        ("Image:Apollo_11 crew.png", "Apollo_11_crew.png"),
        ("Einstein %28 1921%29.jpg", "Einstein_(_1921).jpg"),
        ("Caf&eacute; au lait.jpg", "Café_au_lait.jpg"),
        ("e\u0301cole.jpg", "École.jpg"),  # decomposed accent -> NFC
        ("ßtraße.jpg", "ßtraße.jpg"),  # no single-letter upper case: kept
        ("https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg", "Example.jpg"),
        ("http://upload.wikimedia.org/wikipedia/commons/0/0b/Tower_%28London%29_%C3%A9t%C3%A9.jpg", "Tower_(London)_été.jpg"),
        ("https://upload.wikimedia.org/wikipedia/commons/thumb/d/dc/Buzz_Aldrin.jpg/220px-Buzz_Aldrin.jpg", "Buzz_Aldrin.jpg"),
        ("https://upload.wikimedia.org/wikipedia/commons/thumb/1/1a/Flag.svg/120px-Flag.svg.png", "Flag.svg"),
        ("//upload.wikimedia.org/wikipedia/en/4/4a/Some_poster.jpg?download", "Some_poster.jpg"),
        ("https://commons.wikimedia.org/wiki/File:Example.jpg", "Example.jpg"),
        ("https://upload.wikimedia.org/wikipedia/commons/a/ab/%E5%AF%8C%E5%A3%AB%E5%B1%B1.jpg", "富士山.jpg"),
    ],
)
def test_canonical_name(ref, expected):
    assert canonical_name(ref) == expected
    assert canonical_name(expected) == expected  # idempotent


@pytest.mark.parametrize("ref", ["", "   ", "File:", "../x.jpg", "a/b.jpg", "..", "x%2Fy.jpg", "https://host/"])
def test_canonical_name_rejects_non_names(ref):
    with pytest.raises(InputError):
        canonical_name(ref)


def test_wikimedia_relpath_and_commons_url_match_wikimedia():
    # Known real Commons paths.
    assert wikimedia_relpath("Example.jpg") == "a/a9/Example.jpg"
    assert wikimedia_relpath("File:example.jpg") == "a/a9/Example.jpg"
    assert commons_url("Example.jpg") == "https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg"
    name = "Tower_(London)_été.jpg"
    h = hashlib.md5(name.encode("utf-8")).hexdigest()
    assert wikimedia_relpath("Tower (London) été.jpg") == f"{h[0]}/{h[:2]}/{name}"
    url = commons_url(name)
    assert url.endswith(f"/{h[0]}/{h[:2]}/Tower_(London)_%C3%A9t%C3%A9.jpg")
    assert canonical_name(url) == name  # round trip


def test_resolver_hashed_layout(tmp_path):
    root = tmp_path / "imgs"
    for name in ["Buzz_Aldrin.jpg", "富士山.jpg", "Tower_(London)_été.jpg"]:
        _hashed(root, name)
    r = ImageResolver(root)
    assert r.resolve("File:buzz aldrin.jpg") is None  # "Buzz_aldrin.jpg": another file
    assert r.resolve("file:buzz Aldrin.jpg") == wikimedia_relpath("Buzz_Aldrin.jpg")
    assert r.resolve("Buzz Aldrin.jpg") == wikimedia_relpath("Buzz_Aldrin.jpg")
    thumb = "https://upload.wikimedia.org/wikipedia/commons/thumb/x/xy/Buzz_Aldrin.jpg/220px-Buzz_Aldrin.jpg"
    assert r.resolve(thumb) == wikimedia_relpath("Buzz_Aldrin.jpg")
    assert r.resolve("https://upload.wikimedia.org/wikipedia/commons/a/ab/%E5%AF%8C%E5%A3%AB%E5%B1%B1.jpg") == wikimedia_relpath("富士山.jpg")
    assert r.resolve("Tower (London) e\u0301te\u0301.jpg") == wikimedia_relpath("Tower_(London)_été.jpg")
    assert r.resolve("Nope.jpg") is None
    assert r.stats["resolved"] == 5 and r.stats["resolved_wikimedia"] == 5 and r.stats["missing"] == 2
    rel = r.resolve("Buzz Aldrin.jpg")
    assert not Path(rel).is_absolute() and r.image_file(rel).is_file()


def test_resolver_flat_layout_and_source_spelling_fallback(tmp_path):
    root = tmp_path / "flat"
    _png(root / "Apollo_11.jpg")
    _png(root / "lower_case_first.jpg")  # saved with the source's case
    _png(root / "Einstein_%281921%29.jpg")  # saved with the URL's encoding
    _png(root / "With space.png")  # saved with the source's spaces
    (root / "Not_a_file.jpg").mkdir()
    r = ImageResolver(root)
    assert r.resolve("File:Apollo 11.jpg") == "Apollo_11.jpg"
    assert r.resolve("lower case first.jpg") == "lower_case_first.jpg"
    assert r.resolve("https://upload.wikimedia.org/wikipedia/commons/1/12/Einstein_%281921%29.jpg") == "Einstein_%281921%29.jpg"
    assert r.resolve("With space.png") == "With space.png"
    assert r.resolve("Not a file.jpg") is None
    assert r.stats["resolved_flat"] == 1 and r.stats["resolved_flat_raw"] == 3
    assert r.stats["resolved"] == 4 and r.stats["missing"] == 1


def test_resolver_flat_without_name_cache_gives_the_same_answers(tmp_path, monkeypatch):
    root = tmp_path / "flat"
    _png(root / "Apollo_11.jpg")
    _png(root / "lower_case_first.jpg")
    monkeypatch.setattr(images_mod, "FLAT_CACHE_MAX", 1)  # too many entries: stat() path
    r = ImageResolver(root)
    assert r.resolve("Apollo 11.jpg") == "Apollo_11.jpg"
    assert r.resolve("lower case first.jpg") == "lower_case_first.jpg"
    assert r.resolve("Absent.jpg") is None
    assert r._flat is None


def test_resolver_prefers_mapping_then_hashed_then_flat(tmp_path):
    root = tmp_path / "imgs"
    _hashed(root, "Both.jpg")
    _png(root / "Both.jpg")
    _png(root / "mapped" / "special.png")
    mapping = root / "map.tsv"
    mapping.write_text("ref\tpath\nBoth.jpg\tmapped/special.png\n")
    assert ImageResolver(root).resolve("Both.jpg") == wikimedia_relpath("Both.jpg")
    with_map = ImageResolver(root, mapping)
    assert with_map.resolve("File:both.jpg") == "mapped/special.png"  # via canonical name
    assert with_map.stats["resolved_mapping"] == 1


@pytest.mark.parametrize("fmt", ["tsv", "json_object", "json_list", "jsonl"])
def test_mapping_file_formats(tmp_path, fmt):
    root = tmp_path / "imgs"
    _png(root / "x" / "one.png")
    _png(root / "x" / "two.png")
    outside = _png(tmp_path / "elsewhere" / "secret.png")
    url = "https://upload.wikimedia.org/wikipedia/commons/a/ab/One_%28a%29.png"
    entries = [
        (url, "x/one.png"),  # relative to the mapping file's dir (= root)
        ("Two file.png", str(root / "x" / "two.png")),  # absolute, inside the root
        ("Secret.png", str(outside)),  # absolute, outside: refused
        ("Sneaky.png", "../elsewhere/secret.png"),  # relative escape: refused
        ("Gone.png", "x/gone.png"),  # inside but no file: falls through, missing
    ]
    if fmt == "tsv":
        path = root / "map.tsv"
        path.write_text("".join(f"{k}\t{v}\n" for k, v in entries) + "just one column\n")
    elif fmt == "json_object":
        path = root / "map.json"
        path.write_text(json.dumps(dict(entries)))
    elif fmt == "json_list":
        path = root / "map.json"
        rows = [{"url" if k.startswith("http") else "name": k, "path": v} for k, v in entries]
        path.write_text(json.dumps(rows + [{"path": "x/one.png"}]))
    else:
        path = root / "map.jsonl"
        rows = [json.dumps({"ref": k, "path": v}) for k, v in entries]
        path.write_text("\n".join(rows + ["{not json"]) + "\n")
    r = ImageResolver(root, path)
    assert r.stats["mapping_entries"] == 3 and r.stats["mapping_refused"] == 2
    if fmt != "json_object":
        assert r.stats["mapping_malformed"] == 1
    assert r.resolve(url) == "x/one.png"
    assert r.resolve("File:One (a).png") == "x/one.png"  # the URL's canonical name
    assert r.resolve("Two_file.png") == "x/two.png"
    assert r.resolve("Secret.png") is None
    assert r.resolve("Sneaky.png") is None
    assert r.resolve("Gone.png") is None
    assert r.stats["mapping_missing_file"] == 1


def test_mapping_errors(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    with pytest.raises(InputError, match="does not exist"):
        ImageResolver(root, root / "nope.tsv")
    bad = root / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        ImageResolver(root, bad)
    with pytest.raises(InputError, match="does not exist"):
        ImageResolver(tmp_path / "no_such_dir")


def test_no_images_root_means_every_ref_is_missing():
    r = ImageResolver(None)
    assert r.resolve("Example.jpg") is None and r.resolve("") is None
    assert r.stats["missing"] == 2 and r.stats["resolved"] == 0


def test_escape_attempts_are_refused_and_counted(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    secret = _png(tmp_path / "secret.png")
    _png(tmp_path / "outside_dir" / "Linked_dir.png")
    # A flat symlink to a file outside the root.
    os.symlink(secret, root / "Leak.png")
    # A hashed directory that is a symlink leading out of the root.
    rel = wikimedia_relpath("Linked_dir.png")
    (root / rel.split("/")[0]).mkdir()
    os.symlink(tmp_path / "outside_dir", root / os.path.dirname(rel))
    # A symlink that stays inside the root is fine.
    _png(root / "Real.png")
    os.symlink(root / "Real.png", root / "Alias.png")
    r = ImageResolver(root)
    for ref in ["../secret.png", "File:../secret.png", "/etc/passwd", "..", "x/../../secret.png"]:
        assert r.resolve(ref) is None, ref
    assert r.resolve("Leak.png") is None
    assert r.resolve("Linked dir.png") is None
    assert r.resolve("Alias.png") == "Alias.png"
    assert r.stats["refused_escape"] == 7
    assert r.stats["resolved"] == 1


def test_returned_paths_work_with_the_kb_dir_check(tmp_path):
    from ragvqa.kb.layout import KBDir

    root = tmp_path / "imgs"
    _hashed(root, "富士山.jpg")
    rel = ImageResolver(root).resolve("File:富士山.jpg")
    kb = KBDir(tmp_path / "kb")
    kb.root.mkdir()
    kb.write_manifest({"images_root": str(root), "status": "complete", "shards": []})
    assert kb.image_file(rel) == (root / rel).resolve()
