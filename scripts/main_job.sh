#!/usr/bin/env bash
# The main job on the bundled default: build the sample knowledge base from
# the Wikipedia dump sample that ships in gensim (a rerun resumes / does nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ragvqa build-kb --sample --out data/kb/sample
