"""Checkpoints of the official ReT code (github aimagelab/ReT) -> ragvqa's ReT2Model.

The official ``RetrieverModel`` (``model_type: "retriever"``) holds a
``query_model`` and, unless ``share_query_passage_models``, a ``passage_model``:
two ``RetModel`` s (``model_type: "ret"``) over shared backbones built by
``AutoModel.from_config`` (``CLIPTextModel`` / ``CLIPVisionModel``, no
projection heads). A bare ``RetModel`` checkpoint (no prefix) is read as a
shared model. What this module does:

1. **Config.** Every field of ``RetrieverConfig`` / ``RetConfig`` is read
   (:func:`official_to_config`); a missing field takes the official default.
   ``layer_strategy`` names a table of 0-based block numbers
   (``hidden_states[1:][i]``; ``layer_indexing="blocks_from_0"`` here),
   ``num_queries`` is k, ``use_pooler_features`` averages the k tokens,
   ``late_proj_output_size`` (0: none) is W_final, ``use_tanh`` /
   ``activation_fn`` / the two gate priors set the cell, separate query and
   passage models become two heads. A value the model cannot honour is a
   ModelError naming the field; so is a field nobody has told ragvqa about
   (``ignore_fields`` lets a user accept one after checking the official code).
2. **Key nesting.** transformers 4.x saves the backbones one level deeper
   (``query_model.text_model.text_model.*``) than 5.x
   (``query_model.text_model.*``). Either loads; a checkpoint mixing the two
   is refused (:func:`normalise_nesting`).
3. **Key map.** :data:`OFFICIAL_KEY_MAP` renames the (flat) keys to ours;
   extra ``(regex, replacement)`` rules (``--key-map``) are tried first, for
   layouts nobody has seen yet. Loading is strict: every key is placed, every
   parameter filled.
4. **Pre-processing.** The tokenizer and image processor the official code
   would load (``text_config._name_or_path`` / ``vision_config._name_or_path``)
   are recorded; ``tokenizer_source`` / ``image_processor_source`` point at
   local copies (offline), see :func:`convert_official`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ragvqa.errors import ModelError
from ragvqa.retriever.checkpoint import (
    _offline,
    _short_list,
    is_ragvqa_checkpoint,
    load_ret2,
    load_safetensors_dir,
    load_state_dict_strict,
    read_config,
    resolve_checkpoint_dir,
    save_pretrained,
    verify_reference,
)
from ragvqa.retriever.configuration import OFFICIAL_LAYER_STRATEGIES, ReT2Config
from ragvqa.retriever.hashing import state_dict_sha256, weight_files_sha256
from ragvqa.retriever.modeling import ReT2Model

logger = logging.getLogger(__name__)

# RetConfig's defaults (aimagelab/ReT src/models/ret/configuration_ret.py): a
# field absent from config.json takes these values in the official code.
OFFICIAL_RET_DEFAULTS: dict[str, Any] = {
    "is_text_frozen": True,
    "is_vision_frozen": True,
    "late_proj_output_size": 128,
    "layer_strategy": "clip_vit_b",
    "use_pooler_features": False,
    "num_queries": 32,
    "hidden_size": 1024,
    "dropout_p": 0.05,
    "attention_dropout": 0.05,
    "activation_fn": "gelu",
    "input_gate_bias_prior": 0.0,
    "forget_gate_bias_prior": 0.0,
    "use_tanh": False,
}
# RetConfig fields that are derived (written by the official save, recomputed on load).
_DERIVED_RET_FIELDS = ("num_attention_heads", "intermediate_size")
# Explicit layer lists: never written by the official code (they are properties
# there), accepted if a later release writes them.
_EXPLICIT_LAYER_FIELDS = ("text_layer_idxs", "vision_layer_idxs")
RET_FIELDS = frozenset(
    {"text_config", "vision_config", *OFFICIAL_RET_DEFAULTS, *_DERIVED_RET_FIELDS, *_EXPLICIT_LAYER_FIELDS}
)
RETRIEVER_FIELDS = frozenset(
    {"query_config", "passage_config", "fg_loss", "simmetric_loss", "share_query_passage_models",
     "share_text_models", "share_vision_models"}
)
# Training-only fields: read, and they change nothing at inference.
_TRAINING_ONLY = ("fg_loss", "simmetric_loss", "dropout_p", "attention_dropout", "is_text_frozen", "is_vision_frozen")
# Bookkeeping keys every transformers config writes (4.x and 5.x): not model fields.
GENERIC_CONFIG_KEYS = frozenset({
    "_name_or_path", "_attn_implementation_autoset", "add_cross_attention", "architectures",
    "bad_words_ids", "begin_suppress_tokens", "bos_token_id", "chunk_size_feed_forward",
    "cross_attention_hidden_size", "decoder_start_token_id", "diversity_penalty", "do_sample", "dtype",
    "early_stopping", "encoder_no_repeat_ngram_size", "eos_token_id", "exponential_decay_length_penalty",
    "finetuning_task", "forced_bos_token_id", "forced_eos_token_id", "id2label", "is_decoder",
    "is_encoder_decoder", "label2id", "length_penalty", "max_length", "min_length", "model_type",
    "no_repeat_ngram_size", "num_beam_groups", "num_beams", "num_return_sequences", "output_attentions",
    "output_hidden_states", "output_scores", "pad_token_id", "prefix", "problem_type", "pruned_heads",
    "remove_invalid_values", "repetition_penalty", "return_dict", "return_dict_in_generate",
    "sep_token_id", "suppress_tokens", "task_specific_params", "temperature", "tf_legacy_loss",
    "tie_encoder_decoder", "tie_word_embeddings", "tokenizer_class", "top_k", "top_p", "torch_dtype",
    "torchscript", "transformers_version", "typical_p", "use_bfloat16",
})

# ---------------------------------------------------------------------------
# The key map: official state-dict names (backbone nesting already flat) ->
# ReT2Model names. Each rule is (regex, replacement); the first match wins; a
# key no rule matches is reported. A bare RetModel has no side prefix.
_BACKBONE_RULES: list[tuple[str, str]] = [
    (r"^(?:query_model\.)?text_model\.", "text_tower.model."),
    (r"^(?:query_model\.)?vision_model\.", "vision_tower.model."),
]
_PER_SIDE_RULES: list[tuple[str, str]] = [
    (r"text_adapter\.(\d+)\.", r"text_adapters.\1."),
    (r"vision_adapter\.(\d+)\.", r"vision_adapters.\1."),
    (r"ret_cell\.query_hidden_states$", "initial_state"),  # (1, k, d) -> (k, d)
    (r"ret_cell\.query_state_ids$", "cell.state_offset"),  # (1, k, d) -> (k, d), a fixed buffer
    (r"ret_cell\.xa_ln\.", "cell.state_ln."),
    (r"ret_cell\.sa\.", "cell.state_sa."),
    (
        r"ret_cell\.(text_ln|vision_ln|mlp_ln|text_xa|vision_xa|mlp|text_input_gate_w|"
        r"vision_input_gate_w|text_forget_gate_w|vision_forget_gate_w)\.",
        r"cell.\1.",
    ),
    (r"late_proj\.", "final_proj."),  # W_final (eq. 8)
]
_SIDES = [(r"^(?:query_model\.)?", "head."), (r"^passage_model\.", "passage_head.")]
OFFICIAL_KEY_MAP: list[tuple[str, str]] = _BACKBONE_RULES + [
    (side + pattern, prefix + replacement) for side, prefix in _SIDES for pattern, replacement in _PER_SIDE_RULES
]
# Official keys that carry no weights of ours (read into the config, or unused).
OFFICIAL_DROPPED_KEYS: list[str] = [
    r"^(?:query_model\.|passage_model\.)?ret_cell\.input_gate_bias_prior$",  # -> config.input_gate_bias
    r"^(?:query_model\.|passage_model\.)?ret_cell\.forget_gate_bias_prior$",  # -> config.forget_gate_bias
    r"^(?:query_model\.|passage_model\.)?ret_cell\.sa_ln\.",  # defined but never used by the cell's forward
    r"^logit_scale$",
    r"^logit_bias$",
]
_RESHAPE_TO_TOKENS = re.compile(r"^(?:head|passage_head)\.(?:initial_state|cell\.state_offset)$")
# Top-level modules inside a transformers-4 CLIP/SigLIP tower (the part under text_model.text_model.*).
_TOWER_INNER = ("embeddings.", "encoder.", "final_layer_norm.", "pre_layrnorm.", "post_layernorm.", "head.")


def map_official_key(key: str, rules: Iterable[tuple[str, str]] = ()) -> str | None:
    """Our name for an official key (nesting already flat); None if the key is dropped.

    Raises KeyError if no rule matches (the caller reports it as unplaced).
    ``rules`` are extra (regex, replacement) pairs tried before the table.
    """
    for pattern in OFFICIAL_DROPPED_KEYS:
        if re.search(pattern, key):
            return None
    for pattern, replacement in [*rules, *OFFICIAL_KEY_MAP]:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    raise KeyError(key)


def normalise_nesting(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Backbone keys in the transformers-5 (flat) nesting; returns (tensors, nesting found).

    transformers 4.x writes ``query_model.text_model.text_model.embeddings.*``,
    5.x ``query_model.text_model.embeddings.*``. A checkpoint with both forms
    (in one tower, or one form per tower) is a ModelError.
    """
    found: dict[str, str] = {}
    examples: dict[str, str] = {}
    for tower in ("text_model", "vision_model"):
        nested_re = re.compile(rf"^((?:query_model\.|passage_model\.)?){tower}\.{tower}\.")
        flat_re = re.compile(rf"^((?:query_model\.|passage_model\.)?){tower}\.(?:{'|'.join(map(re.escape, _TOWER_INNER))})")
        nested = [k for k in tensors if nested_re.match(k)]
        flat = [k for k in tensors if flat_re.match(k) and not nested_re.match(k)]
        if nested and flat:
            raise ModelError(
                f"checkpoint mixes transformers-4 nested backbone keys ({nested[0]}) and transformers-5 flat ones "
                f"({flat[0]}) in its {tower}",
                hint="the file was assembled from two saves; export it again with one transformers version",
            )
        if nested or flat:
            found[tower] = "nested" if nested else "flat"
            examples[tower] = (nested or flat)[0]
    if len(set(found.values())) > 1:
        raise ModelError(
            "checkpoint mixes transformers-4 nested and transformers-5 flat backbone keys "
            f"({examples['text_model']} vs {examples['vision_model']})",
            hint="the file was assembled from two saves; export it again with one transformers version",
        )
    nesting = next(iter(found.values()), "flat")
    if nesting == "flat":
        return tensors, "transformers-5 (flat)"
    out = {}
    for key, value in tensors.items():
        key = re.sub(r"^((?:query_model\.|passage_model\.)?)(text_model|vision_model)\.\2\.", r"\1\2.", key)
        out[key] = value
    return out, "transformers-4 (nested)"


def map_official_state(
    tensors: dict[str, torch.Tensor], rules: Iterable[tuple[str, str]] = ()
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename official tensors (flat nesting) to ours; returns (mapped state, keys no rule placed)."""
    rules = list(rules)
    mapped: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    for key, tensor in tensors.items():
        try:
            new = map_official_key(key, rules)
        except KeyError:
            unplaced.append(key)
            continue
        if new is None:
            continue
        if _RESHAPE_TO_TOKENS.match(new) and tensor.dim() == 3:
            tensor = tensor.reshape(tensor.shape[-2], tensor.shape[-1])  # (1, k, d) -> (k, d)
        mapped[new] = tensor
    return mapped, unplaced


# ---------------------------------------------------------------------------
# config


def _refuse(field: str, value: Any, why: str, hint: str | None = None) -> ModelError:
    return ModelError(f"official config field {field} = {value!r}: {why}", hint=hint)


def _check_known(where: str, data: dict[str, Any], known: frozenset[str], ignore: set[str]) -> None:
    unknown = sorted(set(data) - known - GENERIC_CONFIG_KEYS - ignore)
    if unknown:
        raise ModelError(
            f"official config has fields ragvqa does not know: {', '.join(f'{where}{k}' for k in unknown)}",
            hint="check what the official code does with them; if nothing at inference, pass --ignore-field NAME",
        )


def _ret_value(sub: dict[str, Any], name: str) -> Any:
    return sub[name] if name in sub and sub[name] is not None else OFFICIAL_RET_DEFAULTS[name]


def _side_tensor(tensors: dict[str, torch.Tensor], side: str, suffix: str) -> torch.Tensor | None:
    prefixes = ("query_model.", "") if side == "query" else ("passage_model.",)
    for prefix in prefixes:
        if prefix + suffix in tensors:
            return tensors[prefix + suffix]
    return None


def official_to_config(
    raw: dict[str, Any], tensors: dict[str, torch.Tensor], *, ignore_fields: Sequence[str] = ()
) -> tuple[ReT2Config, dict[str, Any]]:
    """A ReT2Config for an official checkpoint, from its config.json (and the buffers it holds).

    Args:
        raw: the parsed config.json (``model_type`` "retriever" or "ret").
        tensors: the checkpoint's tensors (flat nesting).
        ignore_fields: unknown config fields to accept without effect.
    Returns:
        (config without pre-processing fields, notes: what was read and how)
    """
    from ragvqa.retriever.backbones import _hf_config, backbone_config_dict

    ignore = set(ignore_fields)
    model_type = raw.get("model_type")
    if model_type == "retriever":
        _check_known("", raw, RETRIEVER_FIELDS, ignore)
        sub = raw.get("query_config")
        if not isinstance(sub, dict):
            raise _refuse("query_config", sub, "the retriever config has no query model config")
        shared = bool(raw.get("share_query_passage_models", False))
    elif model_type == "ret":  # a bare RetModel: one encoder for both sides
        sub, shared = raw, True
    else:
        raise ModelError(
            f"{model_type!r} is not an official ReT config (model_type must be 'retriever' or 'ret')",
            hint="pass a checkpoint saved by the official ReT code",
        )
    _check_known("query_config." if model_type == "retriever" else "", sub, RET_FIELDS, ignore)
    notes: dict[str, Any] = {"training_only_fields": [f for f in _TRAINING_ONLY if f in raw or f in sub]}

    if not shared:
        for name in ("share_text_models", "share_vision_models"):
            if raw.get(name, True) is False:
                raise _refuse(name, False, "separate backbones for queries and passages are not supported",
                              hint="ragvqa shares the backbones between its query and passage heads")
        passage = raw.get("passage_config")
        if not isinstance(passage, dict):
            raise _refuse("passage_config", passage, "separate query/passage models need a passage config")
        _check_known("passage_config.", passage, RET_FIELDS, ignore)
        for name in sorted(RET_FIELDS - {"text_config", "vision_config"}):
            if name in OFFICIAL_RET_DEFAULTS:
                a, b = _ret_value(sub, name), _ret_value(passage, name)
            else:
                a, b = sub.get(name), passage.get(name)
            if a != b:
                raise _refuse(f"passage_config.{name}", b, f"differs from query_config.{name} = {a!r}",
                              hint="ragvqa's query and passage heads share one config")

    backbones: dict[str, dict[str, Any]] = {}
    for name in ("text_config", "vision_config"):
        value = sub.get(name)
        if not isinstance(value, dict) or "model_type" not in value:
            raise _refuse(name, value, "a ReT model needs both backbones' configs")
        backbones[name] = value
    text_cfg, vision_cfg = backbones["text_config"], backbones["vision_config"]
    text_backbone = backbone_config_dict(_hf_config(text_cfg))
    vision_backbone = backbone_config_dict(_hf_config(vision_cfg))

    # layers: the named table, or explicit lists (0-based block numbers in both cases)
    strategy = sub.get("layer_strategy")
    explicit: dict[str, list[int]] = {n: list(sub[n]) for n in _EXPLICIT_LAYER_FIELDS if sub.get(n) is not None}
    if strategy is None and len(explicit) == 2:
        text_layers = tuple(int(i) for i in explicit["text_layer_idxs"])
        vision_layers = tuple(int(i) for i in explicit["vision_layer_idxs"])
        notes["layers_from"] = "text_layer_idxs / vision_layer_idxs"
    else:
        strategy = strategy or OFFICIAL_RET_DEFAULTS["layer_strategy"]
        if strategy not in OFFICIAL_LAYER_STRATEGIES:
            raise _refuse("layer_strategy", strategy, "not one of the official tables",
                          hint=f"known: {', '.join(OFFICIAL_LAYER_STRATEGIES)}")
        text_layers, vision_layers = OFFICIAL_LAYER_STRATEGIES[strategy]
        for name, layers in zip(_EXPLICIT_LAYER_FIELDS, (text_layers, vision_layers), strict=True):
            if name in explicit and tuple(int(i) for i in explicit[name]) != tuple(layers):
                raise _refuse(name, explicit[name], f"disagrees with layer_strategy {strategy!r} = {list(layers)}")
        notes["layers_from"] = f"layer_strategy {strategy!r}"

    hidden = int(_ret_value(sub, "hidden_size"))
    heads = hidden // 64  # RetConfig computes it; a stored value is ignored by the official code
    if heads < 1:
        raise _refuse("hidden_size", hidden, "the official cell uses hidden_size // 64 heads, which is 0 here")
    for name, want in (("num_attention_heads", heads), ("intermediate_size", 4 * hidden)):
        if name in sub and sub[name] is not None and int(sub[name]) != want:
            raise _refuse(name, sub[name], f"the official code derives {want} from hidden_size {hidden}",
                          hint="this config was not written by the official RetConfig")
    activation = _ret_value(sub, "activation_fn")
    if activation not in ("gelu", "relu"):
        raise _refuse("activation_fn", activation, "the official cell supports 'gelu' and 'relu' only")

    state = _side_tensor(tensors, "query", "ret_cell.query_hidden_states")
    if state is None:
        raise ModelError("official checkpoint has no ret_cell.query_hidden_states (no ReT cell found)")
    k = int(_ret_value(sub, "num_queries"))
    if state.dim() != 3 or state.shape[1] != k or state.shape[2] != hidden:
        raise _refuse("num_queries", k, f"query_hidden_states has shape {tuple(state.shape)}, "
                      f"not (1, {k}, {hidden}) as num_queries and hidden_size say")

    late = _ret_value(sub, "late_proj_output_size")
    late = int(late or 0)
    if late < 0:
        raise _refuse("late_proj_output_size", late, "must be >= 0")

    priors = {}
    for name in ("input_gate_bias_prior", "forget_gate_bias_prior"):
        value = float(_ret_value(sub, name))
        buffer = _side_tensor(tensors, "query", f"ret_cell.{name}")
        if buffer is not None and not math.isclose(float(buffer), value, abs_tol=1e-7):
            # The official model loads the buffer over the config value: the buffer is what runs.
            notes[f"{name}_buffer_overrides_config"] = [value, float(buffer)]
            value = float(buffer)
        if not shared:
            p_buffer = _side_tensor(tensors, "passage", f"ret_cell.{name}")
            if p_buffer is not None and not math.isclose(float(p_buffer), value, abs_tol=1e-7):
                raise _refuse(f"passage_config.{name}", float(p_buffer), f"the passage cell's buffer differs "
                              f"from the query cell's ({value})", hint="ragvqa's heads share one config")
        priors[name] = value

    config = ReT2Config(
        text_backbone=text_backbone,
        vision_backbone=vision_backbone,
        text_layers=tuple(text_layers),
        vision_layers=tuple(vision_layers),
        layer_indexing="blocks_from_0",
        num_state_tokens=k,
        pool_state_tokens=bool(_ret_value(sub, "use_pooler_features")),
        state_activation="tanh" if _ret_value(sub, "use_tanh") else "identity",
        mlp_activation=activation,
        final_projection=late > 0,
        global_features=False,
        separate_passage_encoder=not shared,
        hidden_size=hidden,
        num_heads=heads,
        dropout=float(_ret_value(sub, "dropout_p")),
        attention_dropout=float(_ret_value(sub, "attention_dropout")),
        input_gate_bias=priors["input_gate_bias_prior"],
        forget_gate_bias=priors["forget_gate_bias_prior"],
        gate_linear_bias=True,
        attention_bias=False,
        state_self_attention=True,
        state_offset=True,
        output_dim=late or hidden,
        freeze_text_backbone=bool(_ret_value(sub, "is_text_frozen")),
        freeze_vision_backbone=bool(_ret_value(sub, "is_vision_frozen")),
        tokenizer_name=str(text_cfg.get("_name_or_path") or ""),
        image_processor_name=str(vision_cfg.get("_name_or_path") or ""),
    )
    config.resolved_layers()  # the table must fit the backbones' depths
    return config, notes


# ---------------------------------------------------------------------------
# pre-processing


_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def image_settings(processor: dict[str, Any], source: str) -> dict[str, Any]:
    """ReT2Config image fields from a transformers ``preprocessor_config.json`` (CLIP / SigLIP style).

    Raises ModelError naming the first setting ragvqa's pre-processing cannot reproduce.
    """
    def bad(field: str, why: str) -> ModelError:
        return ModelError(f"image processor {source}: {field} = {processor.get(field)!r} {why}",
                          hint="ragvqa reproduces CLIP-style (shortest edge + centre crop) and square resizes")

    if processor.get("do_resize", True) is not True:
        raise bad("do_resize", "(ragvqa always resizes)")
    if processor.get("do_rescale", True) is not True or not math.isclose(
        float(processor.get("rescale_factor", 1 / 255)), 1 / 255, rel_tol=1e-9
    ):
        raise bad("rescale_factor", "(ragvqa rescales by 1/255)")
    if processor.get("do_normalize", True) is not True:
        raise bad("do_normalize", "(ragvqa always normalises)")
    size = processor.get("size")
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if not isinstance(size, dict):
        raise bad("size", "is not understood")
    out: dict[str, Any] = {}
    crop = processor.get("crop_size")
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if "shortest_edge" in size and len(size) == 1:
        if processor.get("do_center_crop", True) is not True or not isinstance(crop, dict):
            raise bad("do_center_crop", "(a shortest-edge resize needs a centre crop here)")
        if crop.get("height") != crop.get("width"):
            raise bad("crop_size", "(only square crops)")
        out.update(image_resize="shortest_edge_crop", image_size=int(size["shortest_edge"]),
                   image_crop_size=int(crop["height"]))
    elif set(size) == {"height", "width"} and size["height"] == size["width"]:
        if processor.get("do_center_crop", False):
            raise bad("do_center_crop", "(not after a square resize)")
        out.update(image_resize="square", image_size=int(size["height"]), image_crop_size=0)
    else:
        raise bad("size", "is not understood")
    resample = processor.get("resample", 3)
    if resample not in _PIL_RESAMPLE:
        raise bad("resample", "is not a PIL filter code")
    out["image_resample"] = _PIL_RESAMPLE[resample]
    for name in ("image_mean", "image_std"):
        value = processor.get(name)
        if not (isinstance(value, list) and len(value) == 3):
            raise bad(name, "(three per-channel values needed)")
        out[name] = tuple(float(v) for v in value)
    return out


def _local_or_hub_file(name: str, filename: str) -> Path | None:
    """``name/filename`` from a local dir, or from the hub (the cache only when offline); None if neither."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path / filename if (path / filename).is_file() else None
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name, filename, local_files_only=_offline()))
    except Exception:  # hub errors come in many classes; all mean "not available here"
        return None


def _image_processor(
    directory: Path, config: ReT2Config, option: str | Path | None
) -> tuple[dict[str, Any], str]:
    """(image fields, where they came from): option > source dir > the config's name > family defaults."""
    candidates = [str(option)] if option else [str(directory), config.image_processor_name]
    for name in filter(None, candidates):
        found = _local_or_hub_file(name, "preprocessor_config.json")
        if found is not None:
            return image_settings(json.loads(found.read_text()), name), name
        if option:
            raise ModelError(f"no preprocessor_config.json in {option}",
                             hint="pass a local copy of the backbone's image processor (a dir with that file)")
    from ragvqa.retriever.backbones import _hf_config
    from ragvqa.retriever.modeling import defaults_for_backbones

    fields = defaults_for_backbones(
        config.text_backbone["model_type"], config.vision_backbone["model_type"], _hf_config(config.vision_backbone)
    )
    fields = {k: v for k, v in fields.items() if k.startswith("image_")}
    how = f"defaults for {config.vision_backbone['model_type']}"
    if config.image_processor_name:
        how += f" ({config.image_processor_name!r} was not found; pass --image-processor to use it)"
    return fields, how


def _tokenizer(directory: Path, config: ReT2Config, option: str | Path | None) -> tuple[Any, str]:
    """(tokenizer, where it came from): option > source dir > the config's name > CLIP BPE (CLIP only)."""
    from transformers import AutoTokenizer

    def load(name: str):
        return AutoTokenizer.from_pretrained(name, local_files_only=_offline() or Path(name).is_dir())

    if option:
        try:
            return load(str(option)), str(option)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the tokenizer {option}: {str(exc).splitlines()[0]}",
                             hint="pass a local copy of the backbone's tokenizer (a dir with its files)") from exc
    names = []
    if any((directory / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        names.append(str(directory))
    if config.tokenizer_name:
        names.append(config.tokenizer_name)
    for name in names:
        try:
            return load(name), name
        except (OSError, ValueError) as exc:
            logger.info("tokenizer %s not loadable here: %s", name, str(exc).splitlines()[0])
    if config.text_backbone["model_type"] == "clip_text_model":
        import tempfile

        from ragvqa.retriever.backbones import build_clip_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            tok = build_clip_tokenizer(tmp, model_max_length=config.max_text_length)
        how = "OpenAI CLIP BPE (open_clip vocabulary)"
        if config.tokenizer_name:
            how += f"; {config.tokenizer_name!r} was not found, pass --tokenizer to use it"
        return tok, how
    raise ModelError(
        f"no tokenizer for {directory}: none in the directory and {config.tokenizer_name or 'no name'} is not loadable",
        hint="pass --tokenizer PATH (a local copy of the text backbone's tokenizer)",
    )


# ---------------------------------------------------------------------------
# conversion


def convert_official(
    source: str | Path,
    out_dir: str | Path,
    *,
    key_map: list[tuple[str, str]] | None = None,
    tokenizer_source: str | Path | None = None,
    image_processor_source: str | Path | None = None,
    ignore_fields: Sequence[str] = (),
    verify: str | Path | None = None,
) -> dict[str, Any]:
    """Convert an official ReT-code checkpoint into ragvqa's format (and optionally verify it).

    Args:
        source: local dir or hub id of the official checkpoint.
        out_dir: where the converted checkpoint goes.
        key_map: extra (regex, replacement) rules tried before OFFICIAL_KEY_MAP.
        tokenizer_source / image_processor_source: local copies (or hub ids)
            of the backbone's tokenizer / image processor; by default the
            source dir's, else the names in the official config, else (CLIP)
            the OpenAI CLIP tokenizer and CLIP's processor defaults.
        ignore_fields: unknown config fields to accept.
        verify: a reference IO file (see :func:`verify_reference`); the
            converted checkpoint is loaded back from ``out_dir`` and compared.
    Returns:
        a summary dict (layout, layers, nesting, sources, hashes, and
        ``verify`` when asked).
    """
    directory = resolve_checkpoint_dir(source)
    raw = read_config(directory)
    if is_ragvqa_checkpoint(raw):
        raise ModelError(f"{source} is already a ragvqa ReT-2 checkpoint", hint="load it directly")
    tensors, nesting = normalise_nesting(load_safetensors_dir(directory))
    config, notes = official_to_config(raw, tensors, ignore_fields=ignore_fields)
    tokenizer, tokenizer_from = _tokenizer(directory, config, tokenizer_source)
    image_fields, image_from = _image_processor(directory, config, image_processor_source)
    vocab = int(config.text_backbone.get("vocab_size") or 0)
    if vocab and len(tokenizer) > vocab:
        raise ModelError(
            f"tokenizer from {tokenizer_from} has {len(tokenizer)} tokens but the text backbone's vocab_size is {vocab}",
            hint="pass the backbone's own tokenizer with --tokenizer",
        )
    max_len = int(getattr(tokenizer, "model_max_length", 0) or 0)
    positions = int(config.text_backbone.get("max_position_embeddings") or 0)
    if not 0 < max_len <= 100_000:
        max_len = positions or config.max_text_length
    config = config.replace(max_text_length=min(max_len, positions) if positions else max_len, **image_fields)
    model = ReT2Model(config)
    mapped, unplaced = map_official_state(tensors, key_map or [])
    if unplaced:
        raise ModelError(
            f"no key-map rule places these keys of {source}: {_short_list(sorted(unplaced))}",
            hint="add rules with --key-map FILE (a JSON list of [regex, replacement] pairs)",
        )
    load_state_dict_strict(model, mapped, str(source))
    out = save_pretrained(model, out_dir, tokenizer=tokenizer)
    text_idx, vision_idx = config.hidden_state_indices()
    summary: dict[str, Any] = {
        "source": str(source),
        "out_dir": str(out),
        "layout": "separate query/passage heads (ReT v1)" if config.separate_passage_encoder else "one shared head",
        "key_nesting": nesting,
        "num_state_tokens": config.num_state_tokens,
        "output_tokens": model.num_output_tokens,
        "output_dim": model.config.output_dim,
        "layer_indexing": config.layer_indexing,
        "text_layers": list(config.text_layers),
        "vision_layers": list(config.vision_layers),
        "text_hidden_states": list(text_idx),
        "vision_hidden_states": list(vision_idx),
        "tokenizer": tokenizer_from,
        "image_processor": image_from,
        "tensors_in": len(tensors),
        "tensors_out": len(mapped),
        "dropped": len(tensors) - len(mapped),
        "config_hash": model.config.config_hash(),
        "weights_sha256": weight_files_sha256(out),
        "state_dict_sha256": state_dict_sha256(model),
        "notes": notes,
    }
    if verify is not None:
        converted, _ = load_ret2(out)
        summary["verify"] = verify_reference(converted, verify)
    return summary
