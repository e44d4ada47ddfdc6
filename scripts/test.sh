#!/usr/bin/env bash
# One command runs the whole test suite (CI calls exactly this): installs the
# environment if needed, Debian's chromium for the browser tests and the vLLM
# CPU server's own environment (.venv-vllm) for the real-server tests, then
# ruff, the import layers (import-linter), mypy and pytest with every marker
# (slow, browser and vllm_server included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False RAY_AUTH_MODE=disabled
# The real vLLM server's environment (made once, ~3 min); its tests print why they skip if this fails.
bash scripts/serve_vllm_cpu.sh --setup-only || echo "warning: .venv-vllm could not be made; the vLLM server tests will skip and say why" >&2
.venv/bin/ruff check ragvqa app tests bench
.venv/bin/lint-imports
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
