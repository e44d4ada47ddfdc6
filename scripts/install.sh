#!/usr/bin/env bash
# Create (or update) the project's Python environment in .venv at the
# repository root, with the `ragvqa` command and every extra the tests use.
# Idempotent: does nothing when .venv already matches pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.ragvqa-install-stamp
want=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/ragvqa ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned in the SAME command as everything else: a separate or
# unpinned request lets pip pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0 -e ".[offline,sample,ray,demo,wiki,dev]"
# The CLIP BPE vocabulary ships inside open_clip_torch; its own dependencies
# (torchvision, timm) do not load beside the CPU torch, so take the files only.
.venv/bin/python -m pip install -q --no-deps open_clip_torch
echo "$want" > "$stamp"
