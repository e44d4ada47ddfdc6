"""BEM: tokenisation and input layout token for token, both model forms, TF name mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ragvqa.errors import ModelError
from ragvqa.evaluation.metrics.bem import (
    MAX_LENGTH,
    BEMScorer,
    WordPieceTokenizer,
    encode_example,
    map_tf_variables,
    write_converted,
)
from ragvqa.evaluation.metrics.evqa import BemExample, EVQAItem, score_evqa
from tests.evaluation.conftest import make_bert_classifier

SKY = BemExample(
    question="why is the sky blue", reference="light scattering", candidate="scattering of light"
)


@pytest.fixture(scope="module")
def tok(vocab_path):
    return WordPieceTokenizer(vocab_path)


@pytest.fixture(scope="module")
def hf_tokenizer(vocab_path):
    from transformers import BertTokenizer

    return BertTokenizer(str(vocab_path), do_lower_case=True)


@pytest.mark.parametrize(
    "text",
    [
        "why is the sky blue",
        "Where does this hotel derive its name from?",
        "William and Mary Menger",
        "Antoni Gaudí's Sagrada Família, 1882–1926.",
        "naïve café résumé",
        "unaffable antidisestablishmentarianism",
        "U.S.A. $5,000 (approx.)",
        "北京市 Tōkyō",
        "Hello\tworld\nagain",
        "x" * 150,  # longer than 100 bytes: one [UNK]
    ],
)
def test_tokenizer_matches_bert_uncased_on_ordinary_text(tok, hf_tokenizer, text):
    assert tok.tokenize(text) == hf_tokenizer.tokenize(text)


def test_tokenizer_follows_tf_text_where_it_differs(tok):
    # TF Text case-folds with NFKC_Casefold; transformers only lower-cases.
    assert tok.tokenize("Straße") == tok.tokenize("strasse")
    assert tok.tokenize("ﬁne") == tok.tokenize("fine")
    assert tok.tokenize("co\u00adop") == tok.tokenize("coop")  # soft hyphen is default-ignorable
    assert tok.tokenize("[unused7] x") == ["[unused7]", "x"]  # preserve_unused_token=True
    assert tok.tokenize("[CLS]") == ["[", "cl", "##s", "]"]  # other bracketed names are plain text


def test_official_layout_token_for_token(tok):
    enc = encode_example(SKY, tok, layout="official")
    tokens = [
        "[CLS]",
        "scattering",
        "of",
        "light",
        "[SEP]",
        "light",
        "scattering",
        "[SEP]",
        "why",
        "is",
        "the",
        "sky",
        "blue",
        "[SEP]",
    ]
    assert enc.input_ids == [tok.vocab[t] for t in tokens]
    assert enc.input_ids[:5] == [101, 17501, 1997, 2422, 102]  # ids of the uncased BERT-base vocab
    assert enc.segment_ids == [0] * 5 + [1] * 3 + [2] * 6
    ids, segs = enc.padded()
    assert len(ids) == len(segs) == MAX_LENGTH == 512
    assert ids[14:] == [0] * (512 - 14) and segs[14:] == [0] * (512 - 14)


def test_pair_layout_puts_the_question_in_segment_one(tok):
    enc = encode_example(SKY, tok, layout="pair")
    assert enc.segment_ids == [0] * 5 + [1] * 9


def test_empty_candidate_still_has_its_segment(tok):
    enc = encode_example(BemExample("q", "ref", ""), tok)
    assert enc.input_ids[:2] == [tok.cls_id, tok.sep_id] and enc.segment_ids[:2] == [0, 0]


def test_overlong_inputs_are_cut_longest_first_and_marked(tok):
    long = " ".join(["word"] * 700)
    enc = encode_example(BemExample("short question", "ref", long), tok)
    assert len(enc.input_ids) == 512 and enc.truncated
    assert enc.input_ids.count(tok.sep_id) == 3 and enc.segment_ids[-1] == 2


def _manual_probability(model, enc, equivalent=1):
    ids, segs = enc.padded()
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        logits = model(
            input_ids=ids_t, token_type_ids=torch.tensor([segs]), attention_mask=(ids_t != 0).long()
        ).logits
    return torch.softmax(logits, -1)[0, equivalent].item()


def test_official_dir_loads_and_scores_like_a_padded_512_forward(official_bem_dir, tok):
    scorer = BEMScorer(official_bem_dir)
    assert scorer.layout == "official"
    examples = [
        SKY,
        BemExample(
            "Where does this hotel derive its name from?",
            "the Menger family",
            "William and Mary Menger",
        ),
        BemExample(
            "Where does this hotel derive its name from?", "the Menger family", "the Baker family"
        ),
    ]
    probs = scorer(examples)
    assert all(0.0 <= p <= 1.0 for p in probs) and len(set(probs)) == 3
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(official_bem_dir).eval()
    for ex, p in zip(examples, probs, strict=True):
        assert p == pytest.approx(_manual_probability(model, encode_example(ex, tok)), abs=1e-5)
    # Trimming a batch to its longest example equals the official 512-long feed.
    padded = BEMScorer(official_bem_dir, pad_to_max=True)(examples)
    assert padded == pytest.approx(probs, abs=1e-5)


def test_question_segment_id_two_reaches_the_model(official_bem_dir):
    scorer = BEMScorer(official_bem_dir)
    before = scorer([SKY])[0]
    # A random (not constant: LayerNorm would cancel a constant) change of row 2 only.
    delta = torch.randn(scorer.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scorer.model.bert.embeddings.token_type_embeddings.weight[2].add_(delta)
    after = scorer([SKY])[0]
    with torch.no_grad():
        scorer.model.bert.embeddings.token_type_embeddings.weight[2].sub_(delta)
    assert after != pytest.approx(before, abs=1e-6)


def test_two_segment_reproduction_defaults_to_pair_layout(pair_bem_dir):
    scorer = BEMScorer(pair_bem_dir)
    assert scorer.layout == "pair"
    assert 0.0 <= scorer([SKY])[0] <= 1.0
    with pytest.raises(ModelError, match="needs 3"):
        BEMScorer(pair_bem_dir, layout="official")


def test_missing_model_dir_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="neither a local directory"):
        BEMScorer(tmp_path / "no-such-model")


def test_score_evqa_with_the_bert_scorer(official_bem_dir):
    scorer = BEMScorer(official_bem_dir)
    items = [
        EVQAItem(0, "why is the sky blue", "light scattering", "automatic", "scattering of light"),
        EVQAItem(1, "colours?", "red&&blue", "multi_answer", "red and blue"),
    ]
    result = score_evqa(items, scorer)
    by_id = {s.question_id: s for s in result.per_question}
    assert by_id[1].matched_by == "exact"
    expected = scorer([SKY])[0]
    assert by_id[0].bem_probability == pytest.approx(expected)
    assert by_id[0].score == float(expected >= 0.5)


# ---------------------------------------------------------------- TF -> PyTorch mapping


def _tf1_variables(model) -> dict:
    """The model's weights under TF1 BERT names, shaped as TF stores them."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {
        "bert/embeddings/word_embeddings:0": sd["bert.embeddings.word_embeddings.weight"],
        "bert/embeddings/token_type_embeddings:0": sd[
            "bert.embeddings.token_type_embeddings.weight"
        ],
        "bert/embeddings/position_embeddings:0": sd["bert.embeddings.position_embeddings.weight"],
        "bert/embeddings/LayerNorm/gamma:0": sd["bert.embeddings.LayerNorm.weight"],
        "bert/embeddings/LayerNorm/beta:0": sd["bert.embeddings.LayerNorm.bias"],
        "bert/pooler/dense/kernel:0": sd["bert.pooler.dense.weight"].T,
        "bert/pooler/dense/bias:0": sd["bert.pooler.dense.bias"],
        "output_weights:0": sd["classifier.weight"],
        "output_bias:0": sd["classifier.bias"],
        "global_step:0": np.array(1000),
        "bert/encoder/layer_0/attention/self/query/kernel/adam_m:0": np.zeros(1),
    }
    for i in range(model.config.num_hidden_layers):
        p, t = f"bert.encoder.layer.{i}.", f"bert/encoder/layer_{i}/"
        for name in ("query", "key", "value"):
            out[f"{t}attention/self/{name}/kernel:0"] = sd[f"{p}attention.self.{name}.weight"].T
            out[f"{t}attention/self/{name}/bias:0"] = sd[f"{p}attention.self.{name}.bias"]
        out[f"{t}attention/output/dense/kernel:0"] = sd[f"{p}attention.output.dense.weight"].T
        out[f"{t}attention/output/dense/bias:0"] = sd[f"{p}attention.output.dense.bias"]
        out[f"{t}attention/output/LayerNorm/gamma:0"] = sd[f"{p}attention.output.LayerNorm.weight"]
        out[f"{t}attention/output/LayerNorm/beta:0"] = sd[f"{p}attention.output.LayerNorm.bias"]
        out[f"{t}intermediate/dense/kernel:0"] = sd[f"{p}intermediate.dense.weight"].T
        out[f"{t}intermediate/dense/bias:0"] = sd[f"{p}intermediate.dense.bias"]
        out[f"{t}output/dense/kernel:0"] = sd[f"{p}output.dense.weight"].T
        out[f"{t}output/dense/bias:0"] = sd[f"{p}output.dense.bias"]
        out[f"{t}output/LayerNorm/gamma:0"] = sd[f"{p}output.LayerNorm.weight"]
        out[f"{t}output/LayerNorm/beta:0"] = sd[f"{p}output.LayerNorm.bias"]
    return out


def _tf2_variables(model) -> dict:
    """The model's weights under TF2 Model Garden names (einsum kernels)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    h = model.config.hidden_size
    heads = model.config.num_attention_heads
    out = {
        "bert_classifier/word_embeddings/embeddings:0": sd[
            "bert.embeddings.word_embeddings.weight"
        ],
        "bert_classifier/type_embeddings/embeddings:0": sd[
            "bert.embeddings.token_type_embeddings.weight"
        ],
        "bert_classifier/position_embedding/embeddings:0": sd[
            "bert.embeddings.position_embeddings.weight"
        ],
        "bert_classifier/embeddings/layer_norm/gamma:0": sd["bert.embeddings.LayerNorm.weight"],
        "bert_classifier/embeddings/layer_norm/beta:0": sd["bert.embeddings.LayerNorm.bias"],
        "bert_classifier/pooler_transform/kernel:0": sd["bert.pooler.dense.weight"].T,
        "bert_classifier/pooler_transform/bias:0": sd["bert.pooler.dense.bias"],
        "bert_classifier/classification/logits/kernel:0": sd["classifier.weight"].T,
        "bert_classifier/classification/logits/bias:0": sd["classifier.bias"],
    }
    for i in range(model.config.num_hidden_layers):
        p, t = f"bert.encoder.layer.{i}.", f"bert_classifier/transformer/layer_{i}/"
        for name in ("query", "key", "value"):
            out[f"{t}self_attention/{name}/kernel:0"] = sd[
                f"{p}attention.self.{name}.weight"
            ].T.reshape(h, heads, h // heads)
            out[f"{t}self_attention/{name}/bias:0"] = sd[f"{p}attention.self.{name}.bias"].reshape(
                heads, h // heads
            )
        out[f"{t}self_attention/attention_output/kernel:0"] = sd[
            f"{p}attention.output.dense.weight"
        ].T.reshape(heads, h // heads, h)
        out[f"{t}self_attention/attention_output/bias:0"] = sd[f"{p}attention.output.dense.bias"]
        out[f"{t}self_attention_layer_norm/gamma:0"] = sd[f"{p}attention.output.LayerNorm.weight"]
        out[f"{t}self_attention_layer_norm/beta:0"] = sd[f"{p}attention.output.LayerNorm.bias"]
        out[f"{t}intermediate/kernel:0"] = sd[f"{p}intermediate.dense.weight"].T
        out[f"{t}intermediate/bias:0"] = sd[f"{p}intermediate.dense.bias"]
        out[f"{t}output/kernel:0"] = sd[f"{p}output.dense.weight"].T
        out[f"{t}output/bias:0"] = sd[f"{p}output.dense.bias"]
        out[f"{t}output_layer_norm/gamma:0"] = sd[f"{p}output.LayerNorm.weight"]
        out[f"{t}output_layer_norm/beta:0"] = sd[f"{p}output.LayerNorm.bias"]
    return out


@pytest.mark.parametrize("scheme", [_tf1_variables, _tf2_variables])
def test_tf_names_map_onto_the_pytorch_bert(scheme):
    source = make_bert_classifier(3, seed=3)
    state, mapping, ignored = map_tf_variables(scheme(source))
    assert set(state) == {k for k in source.state_dict() if not k.endswith("position_ids")}
    target = make_bert_classifier(3, seed=4)
    missing, unexpected = target.load_state_dict(
        {k: torch.from_numpy(v) for k, v in state.items()}, strict=False
    )
    assert not unexpected and all(k.endswith("position_ids") for k in missing)
    ids = torch.tensor([[101, 17501, 1997, 2422, 102, 2339, 102]])
    types = torch.tensor([[0, 0, 0, 0, 0, 2, 2]])
    with torch.no_grad():
        assert torch.allclose(
            source(input_ids=ids, token_type_ids=types).logits,
            target(input_ids=ids, token_type_ids=types).logits,
            atol=1e-6,
        )
    assert len(mapping) == len(state)
    if scheme is _tf1_variables:
        assert sorted(ignored) == [
            "bert/encoder/layer_0/attention/self/query/kernel/adam_m:0",
            "global_step:0",
        ]


def test_unknown_tf_variables_are_refused():
    variables = _tf1_variables(make_bert_classifier(2))
    variables["bert/some_new_head/kernel:0"] = np.zeros((2, 2))
    with pytest.raises(ModelError, match="match no BERT name"):
        map_tf_variables(variables)


def test_converted_two_type_model_gets_a_zero_third_segment_row(tmp_path, official_bem_dir):
    # TF BERT looks token types up by one-hot matmul: segment id 2 on a
    # two-row table is a zero vector. The converter adds that zero row.
    source = make_bert_classifier(2, seed=5)
    state, mapping, _ = map_tf_variables(_tf1_variables(source))
    out = write_converted(state, tmp_path / "bem", mapping=mapping, source="test")
    meta = json.loads((out / "ragvqa_bem.json").read_text())
    assert meta["layout"] == "official" and meta["type_vocab_padded"] is True
    assert ["output_weights:0", "classifier.weight"] in meta["variable_mapping"]
    scorer = BEMScorer(out)
    rows = scorer.model.bert.embeddings.token_type_embeddings.weight
    assert rows.shape[0] == 3 and torch.count_nonzero(rows[2]) == 0
    assert torch.allclose(rows[:2], source.bert.embeddings.token_type_embeddings.weight)
    # With the zero row, the official input equals the source model fed segment id 2 as "no type".
    enc = encode_example(SKY, scorer.tokenizer)
    ids = torch.tensor([enc.input_ids])
    segs = torch.tensor([enc.segment_ids])
    emb = source.bert.embeddings
    with torch.no_grad():
        type_rows = torch.cat([emb.token_type_embeddings.weight, torch.zeros(1, rows.shape[1])])
        x = (
            emb.word_embeddings(ids)
            + emb.position_embeddings(torch.arange(ids.shape[1]))[None]
            + type_rows[segs]
        )
        x = emb.LayerNorm(x)
        for layer in source.bert.encoder.layer:
            out_layer = layer(x)
            x = out_layer[0] if isinstance(out_layer, tuple) else out_layer
        pooled = source.bert.pooler(x)
        expected = torch.softmax(source.classifier(pooled), -1)[0, 1].item()
    assert scorer([SKY])[0] == pytest.approx(expected, abs=1e-5)
