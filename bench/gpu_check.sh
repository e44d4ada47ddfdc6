#!/usr/bin/env bash
# GPU smoke check: the GPU paths ragvqa cannot exercise on a CPU machine, in
# under 8 minutes on one GPU, one line per check:
#
#   PASS <check>: <what was seen>      FAIL <check>: <why>      SKIP <check>: <what is missing>
#
#   bash bench/gpu_check.sh [--setup]
#
# Checks (tiny random-weight models built from configs: no hub, no download):
#   gpu            nvidia-smi and torch.cuda see a GPU
#   tiny-qwen      a 2-layer Qwen2.5-VL (+ tokenizer, image processor, chat
#                  template) saved as a checkpoint directory
#   vllm-inproc    ragvqa's in-process vllm backend (vllm.LLM) answers a
#                  question with a photo, greedy and with 3 beams
#   vllm-server    `vllm.entrypoints.openai.api_server` serves the tiny model;
#                  ragvqa's HTTP client learns it takes images and answers
#                  with the photo, greedy and with 3 beams
#   faiss-gpu      an IVF index trained and searched on the GPU through
#                  ragvqa.index.faiss_lib.to_gpu; recall@10 against exact CPU search
#   ret2-bf16      a tiny ReT-2 (CLIP backbones) in bfloat16 on the GPU
#                  encodes the same queries as in float32 on the CPU
#
# Environments (GPU machines have vLLM's own; see docs/generation.md):
#   GPU_PY   a Python with CUDA torch, vLLM, faiss with GPU support and
#            ragvqa's light dependencies (default: .venv-gpu/bin/python).
#            ragvqa itself is taken from this checkout (PYTHONPATH).
#   CLIENT_PY  the Python that runs ragvqa's HTTP client against the server
#            (default: .venv/bin/python, else GPU_PY).
#   --setup  makes .venv-gpu first when it is missing (needs the package
#            registry: pip install vllm faiss-gpu-cu12 and ragvqa's deps);
#            not counted in the 8 minutes.
# Exit status: the number of FAILed checks (SKIPs do not count).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
GPU_PY=${GPU_PY:-$ROOT/.venv-gpu/bin/python}
WORK=$(mktemp -d /tmp/ragvqa-gpu-check.XXXXXX)
PORT=${GPU_CHECK_PORT:-8199}
SERVER_PID=""
FAILS=0
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false

cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "${1:-}" = "--setup" ] && [ ! -x "$GPU_PY" ]; then
  python3 -m venv "$ROOT/.venv-gpu"
  "$ROOT/.venv-gpu/bin/python" -m pip install -q --upgrade pip
  # vLLM pins its own CUDA torch and transformers; ragvqa comes from the
  # checkout (PYTHONPATH), its light dependencies from here.
  "$ROOT/.venv-gpu/bin/python" -m pip install -q vllm faiss-gpu-cu12 httpx pyarrow pandas tqdm pytest open_clip_torch
fi

# run NAME TIMEOUT_S COMMAND...: one line per check from the command's last output line.
run() {
  local name=$1 limit=$2; shift 2
  local out rc
  out=$(timeout "$limit" "$@" 2>"$WORK/$name.err"); rc=$?
  local last
  last=$(printf '%s\n' "$out" | grep -E '^(PASS|SKIP) ' | tail -n 1)
  if [ $rc -eq 0 ] && [ -n "$last" ]; then
    echo "$last"
  elif [ $rc -eq 124 ]; then
    echo "FAIL $name: no result within $limit s"; FAILS=$((FAILS + 1))
  else
    echo "FAIL $name: $(tail -n 1 "$WORK/$name.err" | cut -c1-300)"; FAILS=$((FAILS + 1))
  fi
}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP gpu: no NVIDIA GPU here (nvidia-smi)"; exit 0
fi
if [ ! -x "$GPU_PY" ]; then
  echo "SKIP all: no GPU environment at $GPU_PY (set GPU_PY, or run with --setup where the registry is reachable)"; exit 0
fi

run gpu 60 "$GPU_PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"PASS gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

QWEN=$WORK/tiny-qwen2.5-vl
run tiny-qwen 120 "$GPU_PY" - "$QWEN" <<'EOF'
import json, sys
from pathlib import Path
import torch, transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                          Qwen2_5_VLProcessor, Qwen2VLImageProcessor)

out = Path(sys.argv[1])
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
alphabet = pre_tokenizers.ByteLevel.alphabet()
tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.add_special_tokens(specials)
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rope_theta=10000.0, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            bos_token_id=ids["<|endoftext|>"])
# head_dim 16: the three M-RoPE sections must add up to head_dim / 2. Both
# spellings: transformers 5 reads rope_parameters, 4.x reads rope_scaling.
rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
config = Qwen2_5_VLConfig(
    text_config={**text, "rope_parameters": rope, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
    vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64,
                       fullatt_block_indexes=[1], window_size=56),
    image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
    vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    **text,  # transformers 4.x keeps the text fields at the top level
)
torch.manual_seed(0)
Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(out)
# ChatML with Qwen's default system turn and the vision placeholder where the
# image part stands (ragvqa's chat_formats.QWEN2_5_VL writes the same).
template = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] in ('image', 'image_url') %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
tokenizer.chat_template = template
image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
try:
    from transformers import Qwen2VLVideoProcessor
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=template)
except ImportError:  # transformers 4.x before video processors
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
processor.save_pretrained(out)
tokenizer.save_pretrained(out)
size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
print(f"PASS tiny-qwen: {sum(p.numel() for p in Qwen2_5_VLForConditionalGeneration(config).parameters()):,} "
      f"parameters, {size:.1f} MiB, transformers {transformers.__version__}")
EOF

QUESTION_PY='
from PIL import Image
from ragvqa.generation.base import GenerationRequest
PHOTO = Image.new("RGB", (96, 64), (180, 40, 40))
REQUEST = GenerationRequest("What was the lunar module called?",
                            ("Apollo 11 landed the lunar module Eagle on the Moon.",), PHOTO)
'

run vllm-inproc 180 "$GPU_PY" - "$QWEN" <<EOF
import sys, time
$QUESTION_PY
from ragvqa.config import GeneratorConfig
from ragvqa.generation.vllm_local import VLLMGenerator
config = GeneratorConfig(backend="vllm", model=sys.argv[1], family="qwen2_5_vl", num_beams=3, device="cuda")
t0 = time.perf_counter()
gen = VLLMGenerator(config, max_model_len=4096, gpu_memory_utilization=0.25, enforce_eager=True)
load = time.perf_counter() - t0
(greedy,) = gen.generate_detailed([REQUEST], num_beams=1)
(beams,) = gen.generate_detailed([REQUEST], num_beams=3)
assert "<|vision_start|><|image_pad|><|vision_end|>" in greedy.prompt, greedy.prompt
assert isinstance(greedy.raw, str) and isinstance(beams.raw, str)
print(f"PASS vllm-inproc: loaded in {load:.0f} s; greedy {greedy.raw[:30]!r}, 3 beams {beams.raw[:30]!r} (random weights)")
EOF

if [ -d "$QWEN" ]; then
  setsid "$GPU_PY" -m vllm.entrypoints.openai.api_server --model "$QWEN" --served-model-name tiny-qwen \
    --host 127.0.0.1 --port "$PORT" --max-model-len 4096 --enforce-eager --gpu-memory-utilization 0.25 \
    --limit-mm-per-prompt '{"image": 1}' >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
fi
CLIENT_PY=${CLIENT_PY:-$ROOT/.venv/bin/python}
[ -x "$CLIENT_PY" ] || CLIENT_PY=$GPU_PY
run vllm-server 180 "$CLIENT_PY" - "$PORT" "$SERVER_PID" <<EOF
import os, sys, time, urllib.request
from dataclasses import replace
$QUESTION_PY
from ragvqa.config import PROFILES
from ragvqa.generation.openai_http import OpenAIGenerator
port, pid = sys.argv[1], sys.argv[2]
assert pid, "the tiny model was not built"
t0 = time.perf_counter()
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        break
    except OSError:
        os.kill(int(pid), 0)  # raises if the server died
        time.sleep(1)
start = time.perf_counter() - t0
config = replace(PROFILES["paper"].generator, base_url=f"http://127.0.0.1:{port}/v1")
with OpenAIGenerator(config) as gen:
    assert gen.model == "tiny-qwen" and gen.max_model_len == 4096, (gen.model, gen.max_model_len)
    assert gen.sees_images, "the client thinks the served Qwen2.5-VL takes no images"
    (greedy,) = gen.generate_detailed([REQUEST], num_beams=1)
    (beams,) = gen.generate_detailed([REQUEST], num_beams=3)
assert "<image>" in greedy.prompt
print(f"PASS vllm-server: healthy after {start:.0f} s; photo sent; greedy {greedy.raw[:25]!r}, 3 beams {beams.raw[:25]!r}")
EOF
if [ "$FAILS" -gt 0 ] && [ -f "$WORK/server.log" ]; then
  echo "  (server log tail: $(tail -n 3 "$WORK/server.log" | tr '\n' ' ' | cut -c1-300))"
fi
if [ -n "$SERVER_PID" ]; then
  kill -TERM "$SERVER_PID" 2>/dev/null
  for _ in $(seq 1 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
fi

run faiss-gpu 120 "$GPU_PY" - <<'EOF'
import time
import numpy as np
from ragvqa.index.faiss_lib import faiss_module, num_gpus, to_gpu
faiss = faiss_module()
if num_gpus() == 0:
    print("SKIP faiss-gpu: this faiss has no GPU support (install faiss-gpu-cu12 into the GPU environment)")
    raise SystemExit(0)
rng = np.random.default_rng(0)
centers = rng.normal(size=(256, 128))
x = (centers[rng.integers(0, 256, 100_000)] + 0.3 * rng.normal(size=(100_000, 128))).astype("float32")
x /= np.linalg.norm(x, axis=1, keepdims=True)
q = x[rng.choice(len(x), 1000, replace=False)] + 0.05 * rng.normal(size=(1000, 128)).astype("float32")
exact = faiss.IndexFlatIP(128)
exact.add(x)
_, truth = exact.search(q, 10)
index, on_gpu = to_gpu(faiss.index_factory(128, "IVF1024,Flat", faiss.METRIC_INNER_PRODUCT), shard=False)
assert on_gpu, "to_gpu left the index on the CPU"
t0 = time.perf_counter(); index.train(x); index.add(x); build = time.perf_counter() - t0
index.nprobe = 32
t0 = time.perf_counter(); _, found = index.search(q, 10); per_query = (time.perf_counter() - t0) / len(q)
recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
assert recall > 0.9, f"recall@10 {recall:.3f}"
print(f"PASS faiss-gpu: IVF1024,Flat on {num_gpus()} GPU(s), 100k x 128: build {build:.1f} s, "
      f"{per_query * 1e6:.0f} us/query, recall@10 {recall:.3f} vs exact")
EOF

run ret2-bf16 120 "$GPU_PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path
import torch
from PIL import Image
from ragvqa.retriever.backbones import build_clip_tokenizer
from ragvqa.retriever.encoder import ReT2Retriever
from ragvqa.retriever.modeling import ReT2Model
from tests.retriever.conftest import tiny_config
work = Path(sys.argv[1])
torch.manual_seed(0)
checkpoint = work / "ret2"
ReT2Model(tiny_config("clip")).eval().save_pretrained(checkpoint, tokenizer=build_clip_tokenizer(work / "clip-tok"))
photos = [Image.new("RGB", (80, 60), (200, 30, 30)), Image.new("RGB", (60, 80), (20, 160, 90))]
questions = ["What was the lunar module called?", "Who built this church?"]
cpu = ReT2Retriever.from_spec("ret2", str(checkpoint), device="cpu", dtype="float32")
gpu = ReT2Retriever.from_spec("ret2", str(checkpoint), device="cuda", dtype="bfloat16")
a = torch.as_tensor(cpu.encode_queries(photos, questions), dtype=torch.float32)
b = torch.as_tensor(gpu.encode_queries(photos, questions), dtype=torch.float32)
cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min().item()
assert cos > 0.98, f"bf16 GPU vs fp32 CPU cosine {cos:.4f}"
print(f"PASS ret2-bf16: {torch.cuda.get_device_name(0)}, query embeddings {tuple(b.shape)}, "
      f"min cosine bf16-GPU vs fp32-CPU {cos:.4f}")
EOF

exit "$FAILS"
