"""The transformers attention integration on random tensors and a tiny random Llama (no download).

The attention function is checked against the eager reference of aqua_model.kernels.reference
(its gathered dot products), H2O against a plain-Python replay of the eviction rule, and the
projected-key cache against the cache-free forward.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from aqua_model.integrations import transformers as aq  # noqa: E402
from aqua_model.integrations.calibrate import ModelProjections, calibrate_model  # noqa: E402
from aqua_model.kernels import reference  # noqa: E402
from aqua_model.kernels.calibration import fit_projection  # noqa: E402

B, HQ, HKV, T, D = 2, 6, 2, 12, 16


class _Module:
    def __init__(self, state):
        setattr(self, aq.STATE_ATTR, state)
        self.layer_idx = state.layer_idx


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, HKV, T, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, HKV, T, D, generator=g, dtype=torch.float64)
    P = torch.stack(
        [
            fit_projection(torch.randn(40, D, generator=g, dtype=torch.float64), None, source="queries")
            for _ in range(HKV)
        ]
    )
    return q, k, v, P


def _run(q, keys, v, P, **kw):
    settings = aq._settings(
        d=D,
        k=kw.pop("k", None),
        method=kw.pop("method", "aqua"),
        selection=kw.pop("selection", "per-head"),
        stored_dims=kw.pop("stored_dims", None),
        h2o_budget=kw.pop("h2o_budget", None),
        h2o_recent=kw.pop("h2o_recent", None),
        seed=0,
    )
    mod = _Module(aq.LayerState(settings, P if settings.method in ("aqua", "loki") else None, 0))
    out, probs = aq.aqua_attention_forward(mod, q, keys, v, None, scaling=D**-0.5)
    return out.transpose(1, 2), probs


@pytest.mark.parametrize("selection", ["per-head", "group"])
@pytest.mark.parametrize("k_keep,m", [(16, None), (10, None), (4, None), (6, 12), (12, 12)])
def test_aqua_matches_the_gathered_reference(selection, k_keep, m):
    q, k, v, P = _inputs()
    mine, _ = _run(q, k, v, P, k=k_keep, selection=selection, stored_dims=m)
    ref = reference.aqua_attention(q, k, v, P, k_keep=k_keep, selection=selection, key_dims=m)
    assert torch.allclose(mine, ref, atol=1e-10)


def test_sparq_is_the_reference_without_rotation_and_dense_is_exact():
    q, k, v, P = _inputs(1)
    mine, _ = _run(q, k, v, P, k=5, method="sparq")
    assert torch.allclose(mine, reference.aqua_attention(q, k, v, None, k_keep=5), atol=1e-10)
    dense, _ = _run(q, k, v, P, method="dense")
    assert torch.allclose(dense, reference.dense_attention(q, k, v), atol=1e-10)
    full, _ = _run(q, k, v, P, k=D)  # AQUA at k = d: exact up to rounding
    assert torch.allclose(full, dense, atol=1e-10)


def test_loki_is_a_static_prefix_and_random_keeps_k_dims():
    q, k, v, P = _inputs(2)
    settings = aq._settings(
        d=D,
        k=5,
        method="loki",
        selection="per-head",
        stored_dims=None,
        h2o_budget=None,
        h2o_recent=None,
        seed=0,
    )
    scores = aq.approximate_scores(q, k, settings=settings, projection=P)
    q_hat, k_hat = reference.rotate(q, P, g=HQ // HKV), reference.expand_kv(reference.rotate(k, P), HQ // HKV)
    assert torch.allclose(scores, q_hat[..., :5] @ k_hat[..., :5].transpose(-1, -2), atol=1e-10)
    rnd = aq._settings(
        d=D,
        k=5,
        method="random",
        selection="per-head",
        stored_dims=None,
        h2o_budget=None,
        h2o_recent=None,
        seed=3,
    )
    keep = aq._keep_dims(q, rnd, HQ // HKV, layer_idx=0)
    assert torch.equal(keep.sum(-1), torch.full(keep.shape[:-1], 5.0, dtype=keep.dtype))
    assert torch.equal(keep, aq._keep_dims(q, rnd, HQ // HKV, layer_idx=0))  # seeded
    assert not torch.equal(keep[0, 0, 0], keep[0, 0, 1])  # drawn per query (this seed)


def _h2o_naive(scores, g, budget, recent):
    """Plain-Python replay of H2O's rule on [B, H_q, T, T] scores."""
    Bn, hq, Tn, _ = scores.shape
    out = torch.zeros(Bn, hq, Tn, Tn, dtype=torch.bool)
    for b in range(Bn):
        for h in range(hq // g):
            alive, acc = [], [0.0] * Tn
            for t in range(Tn):
                alive.append(t)
                if len(alive) > budget:
                    cands = [j for j in alive if j <= t - recent]
                    alive.remove(min(cands, key=lambda j: (acc[j], j)))
                for hh in range(h * g, (h + 1) * g):
                    out[b, hh, t, alive] = True
                    row = torch.softmax(scores[b, hh, t, alive].double(), dim=0)
                    for j, p in zip(alive, row.tolist()):
                        acc[j] += p
    return out


@pytest.mark.parametrize("budget,recent", [(4, 2), (5, 1), (6, 5)])
def test_h2o_keep_mask_matches_a_plain_replay(budget, recent):
    g = torch.Generator().manual_seed(budget)
    scores = torch.randn(1, 4, 10, 10, generator=g) + torch.triu(torch.full((10, 10), -1e30), 1)
    keep = aq.h2o_keep_mask(scores, g=2, budget=budget, recent=recent)
    assert torch.equal(keep, _h2o_naive(scores, 2, budget, recent))
    assert torch.equal(keep.sum(-1)[0, 0], torch.tensor([min(t + 1, budget) for t in range(10)]))


def test_h2o_with_a_budget_of_all_tokens_is_exact_and_needs_a_full_sequence():
    q, k, v, P = _inputs(4)
    exact, _ = _run(q, k, v, P, method="dense")
    h2o, _ = _run(q, k, v, P, method="dense", h2o_budget=T)
    assert torch.allclose(exact, h2o, atol=1e-12)
    with pytest.raises(ValueError, match="full sequence"):
        aq.h2o_keep_mask(torch.zeros(1, 2, 1, 5), g=1, budget=2, recent=1)


def test_bad_settings_name_the_argument():
    kw = dict(d=D, selection="per-head", stored_dims=None, h2o_budget=None, h2o_recent=None, seed=0)
    with pytest.raises(ValueError, match="method must be one of"):
        aq._settings(k=4, method="quest", **kw)
    with pytest.raises(ValueError, match="k must be an integer in"):
        aq._settings(k=D + 1, method="aqua", **kw)
    with pytest.raises(ValueError, match="k must be an integer"):
        aq._settings(k=None, method="aqua", **kw)
    with pytest.raises(ValueError, match="stored_dims < d"):
        aq._settings(k=4, method="sparq", **{**kw, "stored_dims": 8})
    with pytest.raises(ValueError, match="h2o_recent"):
        aq._settings(k=4, method="aqua", **{**kw, "h2o_budget": 4, "h2o_recent": 4})
    with pytest.raises(ValueError, match="selection must be one of"):
        aq._settings(k=4, method="aqua", **{**kw, "selection": "union"})


# --------------------------------------------------------------------------- a tiny random Llama


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(1))
    proj = calibrate_model(model, list(ids), model_name="tiny-llama", text="random ids")
    return model, ids, proj


def test_tiny_llama_k_equal_d_is_the_unmodified_model(tiny):
    model, ids, proj = tiny
    with torch.no_grad():
        base = model(input_ids=ids, use_cache=False).logits
        aq.apply(model, proj, k=16)
        assert model.config._attn_implementation == aq.IMPLEMENTATION
        full = model(input_ids=ids, use_cache=False).logits
        aq.apply(model, proj, k=6)
        part = model(input_ids=ids, use_cache=False).logits
        aq.restore(model)
        again = model(input_ids=ids, use_cache=False).logits
    assert model.config._attn_implementation == "eager"
    assert torch.allclose(full, base, atol=1e-5)
    assert (part - base).abs().max() > 1e-3 and torch.isfinite(part).all()
    assert torch.equal(again, base)


def test_projected_key_cache_stores_m_dims_and_equals_the_full_forward(tiny):
    model, ids, proj = tiny
    x = ids[:1]
    with torch.no_grad():
        aq.apply(model, proj, k=6, stored_dims=10)
        full = model(input_ids=x, use_cache=False).logits
        cache = aq.projected_key_cache(model)
        steps = [model(input_ids=x[:, :14], cache=cache, use_cache=True).logits]
        steps += [model(input_ids=x[:, j : j + 1], cache=cache, use_cache=True).logits for j in range(14, 20)]
        aq.restore(model)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    # 2 layers x 2 KV heads x 20 tokens x m = 10 stored key values
    assert cache.key_values_stored() == 2 * 2 * 20 * 10
    assert cache.layers[0].keys.shape[-1] == 10


def test_capture_records_the_post_rope_keys_of_the_cache(tiny):
    model, ids, _ = tiny
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=ids[:1], cache=cache, use_cache=True)
    queries, keys = aq.capture(model, lambda: model(input_ids=ids[:1], use_cache=False))
    for layer in range(2):
        assert torch.allclose(keys[layer][0], cache.layers[layer].keys, atol=1e-6)
        assert queries[layer][0].shape == (1, 4, 20, 16)
    assert model.config._attn_implementation == "eager"


def test_projections_save_load_check_name_and_schema(tiny, tmp_path):
    _, _, proj = tiny
    path = tmp_path / "p.pt"
    proj.save(path)
    back = ModelProjections.load(path, model_name="tiny-llama")
    assert (
        torch.equal(back.calibration.P, proj.calibration.P)
        and back.n_tokens == 60
        and back.text == "random ids"
    )
    # one SVD per (layer, KV group): each P is orthogonal
    eye = torch.eye(16)
    assert torch.allclose(back.calibration.P[1, 0].T @ back.calibration.P[1, 0], eye, atol=1e-5)
    with pytest.raises(ValueError, match="model_name must be 'tiny-llama'"):
        ModelProjections.load(path, model_name="SmolLM2-135M-Instruct")
    payload = torch.load(path, weights_only=True)
    payload["schema_version"] = 99
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="schema_version must be 1"):
        ModelProjections.load(tmp_path / "bad.pt")


def test_apply_rejects_missing_or_misshapen_projections(tiny):
    model, _, proj = tiny
    with pytest.raises(ValueError, match="projections are required"):
        aq.apply(model, None, k=4)
    with pytest.raises(ValueError, match="must have shape"):
        aq.apply(model, proj.calibration.P[:1], k=4)
    with pytest.raises(TypeError, match="projections must be"):
        aq.apply(model, "P.pt", k=4)
    aq.restore(model)


def test_the_run_record_names_machine_python_and_libraries() -> None:
    """Both decoder studies (analysis/decoder_study.py, analysis/prefill_accuracy.py) record where they ran
    through one function."""
    import os
    import platform

    import torch

    from aqua_model.fidelity.decoder import run_environment

    env = run_environment()
    assert env["python"] == platform.python_version()
    assert env["machine"].startswith(f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}")
    transformers = pytest.importorskip("transformers")
    assert env["transformers"] == transformers.__version__
