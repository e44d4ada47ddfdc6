"""The CLIP tokenizer built from open_clip's BPE vocabulary matches the real OpenAI one."""

from __future__ import annotations


def test_known_ids(clip_tokenizer):
    assert clip_tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(clip_tokenizer) == 49408


def test_truncation_keeps_eos(clip_tokenizer):
    ids = clip_tokenizer(["word " * 200], truncation=True, max_length=77)["input_ids"][0]
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407


def test_saved_tokenizer_reloads_with_autotokenizer(clip_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    clip_tokenizer.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert again("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
