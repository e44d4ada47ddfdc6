"""BEM (BERT Matching, Bulian et al. 2022) answer equivalence, as the official E-VQA evaluator uses it.

Three modules, one job each:

- :mod:`.tokenizer`: TF Text's BERT tokenisation in plain Python and the
  ``[CLS] candidate [SEP] reference [SEP] question [SEP]`` input layout;
- :mod:`.scorer`: :class:`BEMScorer`, P(equivalent) from a transformers
  BERT classifier;
- :mod:`.convert`: the official TF SavedModel -> a directory the scorer loads
  (tensorflow imported only when it runs).

The names below are re-exported so ``from ragvqa.evaluation.metrics.bem
import BEMScorer`` keeps working; none of these imports loads torch.
"""

from __future__ import annotations

from ragvqa.evaluation.metrics.bem.convert import (
    TF_TO_TORCH,
    bert_config_from_state,
    convert_tf_savedmodel,
    map_tf_variables,
    read_tf_savedmodel_variables,
    write_converted,
)
from ragvqa.evaluation.metrics.bem.scorer import METADATA_FILE, BEMScorer
from ragvqa.evaluation.metrics.bem.tokenizer import (
    LAYOUTS,
    MAX_LENGTH,
    VOCAB_SIZE,
    BemInputs,
    WordPieceTokenizer,
    default_vocab_path,
    encode_example,
)

__all__ = [
    "LAYOUTS",
    "MAX_LENGTH",
    "METADATA_FILE",
    "TF_TO_TORCH",
    "VOCAB_SIZE",
    "BEMScorer",
    "BemInputs",
    "WordPieceTokenizer",
    "bert_config_from_state",
    "convert_tf_savedmodel",
    "default_vocab_path",
    "encode_example",
    "map_tf_variables",
    "read_tf_savedmodel_variables",
    "write_converted",
]
