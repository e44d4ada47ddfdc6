#!/usr/bin/env bash
# One command runs the whole test suite (CI calls exactly this): installs the
# environment if needed, Debian's chromium for the browser tests, then ruff
# and pytest with every marker (slow and browser included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False RAY_AUTH_MODE=disabled
.venv/bin/ruff check ragvqa app tests bench
.venv/bin/python -m pytest "$@"
