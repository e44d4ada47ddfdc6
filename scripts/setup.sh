#!/usr/bin/env bash
# One command on a fresh machine: make .venv, then run the main job on the
# bundled default (offline: no download of models or data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/main_job.sh
