"""The Qwen2 path of the integration in CI: a tiny random Qwen2 (q/k/v biases, GQA, RoPE) built here.

Checks: k = d is exact in float32 and within the bf16 noise floor in bf16 (P is applied in
float32, whatever the model's dtype); restore() is bit-exact; cached generation with the
projected-key cache gives the baseline's tokens; with a sliding-window config the projected-key
cache keeps exactly what DynamicCache keeps, layer by layer; the chunked-prefill calibration
gives orthogonal P from every position's q and k.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_qwen2 import VOCAB, tiny_qwen2  # noqa: E402
from transformers.cache_utils import DynamicCache  # noqa: E402

from aqua_model.integrations import transformers as aq  # noqa: E402
from aqua_model.integrations.calibrate import calibrate_model_prefill, collect_qk_prefill  # noqa: E402

SEQ = 40


def _ids(seed: int = 1, n: int = SEQ) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (2, n), generator=g)


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


@pytest.fixture(scope="module")
def calibrated():
    model = tiny_qwen2()
    assert all(m.q_proj.bias is not None and m.k_proj.bias is not None for m in aq.attention_modules(model))
    proj = calibrate_model_prefill(
        model, _ids(seed=7)[0], model_name="tiny-qwen2", text="random ids", chunk_tokens=8
    )
    return model, proj


def test_the_prefill_calibration_sees_every_position_once_and_gives_orthogonal_p(calibrated):
    model, proj = calibrated
    q, k = collect_qk_prefill(model, _ids(seed=7)[0], chunk_tokens=8)
    assert tuple(q.shape) == (3, 6, SEQ, 16) and tuple(k.shape) == (3, 2, SEQ, 16)
    # the same q and k as one forward without a cache (chunking changes nothing but memory)
    q1, k1 = collect_qk_prefill(model, _ids(seed=7)[0], chunk_tokens=SEQ)
    torch.testing.assert_close(q, q1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k, k1, atol=1e-5, rtol=1e-5)
    P = proj.calibration.P.double()
    eye = torch.eye(16, dtype=torch.float64)
    assert float((P.mT @ P - eye).abs().max()) < 1e-5
    assert proj.n_tokens == SEQ


def test_k_equal_d_is_exact_in_float32_and_restore_is_bit_exact(calibrated):
    model, proj = calibrated
    ids = _ids()
    with torch.no_grad():
        base = model(input_ids=ids).logits
        aq.apply(model, proj, k=16)
        approx = model(input_ids=ids).logits
        aq.restore(model)
        again = model(input_ids=ids).logits
    assert _kl(base, approx) < 1e-6  # the target for k = d in fp32
    assert torch.equal(base, again)
    # and k < d changes the output (the approximation is really applied)
    with torch.no_grad():
        aq.apply(model, proj, k=4)
        coarse = model(input_ids=ids).logits
        aq.restore(model)
    assert _kl(base, coarse) > 1e-3


def test_cached_generation_with_the_projected_key_cache_gives_the_baseline_tokens(calibrated):
    model, proj = calibrated
    prompt = _ids(seed=3, n=12)[:1]
    with torch.no_grad():
        base = model.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=0)
        aq.apply(model, proj, k=16)
        cache = aq.projected_key_cache(model)
        gen = model.generate(prompt, max_new_tokens=10, do_sample=False, cache=cache, pad_token_id=0)
        aq.restore(model)
    assert torch.equal(base, gen)
    assert all(layer.keys.shape[-1] == 16 for layer in cache.layers)


def test_k_equal_d_in_bf16_is_within_the_bf16_noise_floor():
    model32 = tiny_qwen2(seed=4)
    ids = _ids(seed=5)
    proj = calibrate_model_prefill(
        model32, ids[0], model_name="tiny-qwen2", text="random ids", chunk_tokens=16
    )
    with torch.no_grad():
        ref32 = model32(input_ids=ids).logits
        model16 = tiny_qwen2(seed=4).to(torch.bfloat16)
        base16 = model16(input_ids=ids).logits
        aq.apply(model16, proj, k=16)
        states = [getattr(m, aq.STATE_ATTR) for m in aq.attention_modules(model16)]
        assert all(s.projection.dtype == torch.float32 for s in states)  # P is not cast to bf16
        approx16 = model16(input_ids=ids).logits
        aq.restore(model16)
    floor = _kl(ref32, base16)  # what bf16 alone costs
    assert floor > 0
    assert _kl(ref32, approx16) <= floor  # AQUA in bf16 is as close to the exact model as bf16 itself
    assert _kl(base16, approx16) <= floor


def test_rotation_runs_in_float32_at_least():
    assert aq.rotation_dtype(torch.bfloat16) == torch.float32
    assert aq.rotation_dtype(torch.float16) == torch.float32
    assert aq.rotation_dtype(torch.float32) == torch.float32
    assert aq.rotation_dtype(torch.float64) == torch.float64
    x = torch.randn(1, 2, 3, 16).to(torch.bfloat16)
    P = torch.linalg.qr(torch.randn(2, 16, 16))[0]
    out = aq._rotate(x, P)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.float() @ P, atol=0, rtol=0)


def test_sliding_window_projected_cache_keeps_what_dynamic_cache_keeps():
    model = tiny_qwen2(sliding=True)
    ids = _ids(seed=9, n=14)[:1]
    proj = calibrate_model_prefill(
        model, _ids(seed=8)[0], model_name="tiny-qwen2", text="random ids", chunk_tokens=40
    )
    with torch.no_grad():
        dyn = DynamicCache(config=model.config)
        base = model(input_ids=ids, cache=dyn).logits
        aq.apply(model, proj, k=16)
        projected = aq.projected_key_cache(model)
        approx = model(input_ids=ids, cache=projected).logits
        step_base = model  # one more decode step on both caches
        nxt = ids[:, -1:]
        aq.restore(model)
        b2 = step_base(input_ids=nxt, cache=dyn).logits
        aq.apply(model, proj, k=16)
        a2 = model(input_ids=nxt, cache=projected).logits
        aq.restore(model)
    kept_dyn = [layer.keys.shape[-2] for layer in dyn.layers]
    kept_proj = [layer.keys.shape[-2] for layer in projected.layers]
    # layer 0 is full attention (max_window_layers = 1), layers 1-2 keep sliding_window - 1 = 4 tokens
    assert kept_dyn == [15, 4, 4]
    assert kept_proj == kept_dyn
    assert [type(layer).__name__ for layer in projected.layers] == [
        "ProjectedKeyLayer",
        "ProjectedKeySlidingWindowLayer",
        "ProjectedKeySlidingWindowLayer",
    ]
    assert _kl(base, approx) < 1e-6 and _kl(b2, a2) < 1e-6
