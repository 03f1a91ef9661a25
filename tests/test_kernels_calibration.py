"""Calibration: P is the sorted right-singular basis of the group's stacked queries/keys."""

from __future__ import annotations

import pytest
import torch

from aqua_model.kernels.calibration import (
    SCHEMA_VERSION,
    Calibration,
    calibrate,
    fit_projection,
    load_calibration,
    save_calibration,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _anisotropic(n: int, d: int, seed: int) -> torch.Tensor:
    """Rows with clearly separated variances along a random basis (distinct singular values)."""
    g = _gen(seed)
    basis = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    scales = torch.linspace(3.0, 0.1, d, dtype=torch.float64)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ basis.T


def _orth_err(P: torch.Tensor) -> float:
    eye = torch.eye(P.shape[-1], dtype=torch.float64)
    return (P.double().mT @ P.double() - eye).abs().max().item()


@pytest.mark.parametrize("source", ["queries", "keys", "both"])
@pytest.mark.parametrize("n", [5, 200])  # fewer and more rows than d
def test_projection_is_orthogonal(source: str, n: int) -> None:
    q, k = _anisotropic(n, 16, 1).float(), _anisotropic(n + 3, 16, 2).float()
    P = fit_projection(q, k, source=source)
    assert P.shape == (16, 16) and P.dtype == torch.float32
    assert _orth_err(P) < 1e-5


def test_columns_sorted_by_captured_energy_and_match_svd() -> None:
    q, k = _anisotropic(300, 12, 3), _anisotropic(250, 12, 4)
    P = fit_projection(q, k, source="both")
    x = torch.cat([q, k])
    energy = (x @ P).pow(2).sum(0)  # = squared singular values, column by column
    assert torch.all(energy[:-1] >= energy[1:])
    s = torch.linalg.svdvals(x)
    torch.testing.assert_close(energy.sqrt(), s, rtol=1e-10, atol=1e-10)


def test_prefix_spans_low_rank_data() -> None:
    """Data of rank r: everything beyond the first r rotated coordinates is ~0."""
    g = _gen(5)
    d, r = 16, 3
    x = torch.randn(100, r, generator=g, dtype=torch.float64) @ torch.randn(
        r, d, generator=g, dtype=torch.float64
    )
    P = fit_projection(x, None, source="queries")
    rotated = x @ P
    assert rotated[:, r:].abs().max() < 1e-9 * rotated.abs().max()


def test_source_selects_rows() -> None:
    q, k = _anisotropic(80, 8, 6), _anisotropic(80, 8, 7)
    other_k = _anisotropic(80, 8, 8)
    torch.testing.assert_close(
        fit_projection(q, k, source="queries"), fit_projection(q, other_k, source="queries")
    )
    torch.testing.assert_close(fit_projection(q, k, source="keys"), fit_projection(None, k, source="keys"))
    assert not torch.allclose(fit_projection(q, k, source="queries"), fit_projection(q, k, source="keys"))


def test_center_removes_the_mean_direction() -> None:
    g = _gen(9)
    d = 8
    offset = torch.zeros(d, dtype=torch.float64)
    offset[0] = 50.0  # a large mean along e0, small spread
    x = torch.randn(400, d, generator=g, dtype=torch.float64) * torch.linspace(
        1.0, 0.2, d, dtype=torch.float64
    )
    x[:, 3] *= 3.0  # the largest centred variance is along e3
    x = x + offset
    raw = fit_projection(x, None, source="queries")
    cen = fit_projection(x, None, source="queries", center=True)
    assert raw[:, 0].abs().argmax().item() == 0  # uncentred: the mean dominates
    assert cen[:, 0].abs().argmax().item() == 3  # centred: the top variance direction


def test_signs_are_deterministic_and_dtype_follows_float64() -> None:
    q = _anisotropic(50, 6, 10)
    P = fit_projection(q, None, source="queries")
    assert P.dtype == torch.float64
    cols = P.abs().argmax(0)
    assert torch.all(P[cols, torch.arange(6)] > 0)
    P16 = fit_projection(q.to(torch.bfloat16), None, source="queries")
    assert P16.dtype == torch.float32 and _orth_err(P16) < 1e-5


def test_calibrate_groups_query_heads_with_their_kv_head() -> None:
    g = _gen(11)
    L, hq, hkv, n, d = 2, 6, 2, 20, 8
    queries = torch.randn(L, hq, n, d, generator=g)
    keys = torch.randn(L, hkv, n + 5, d, generator=g)
    cal = calibrate(queries, keys, source="both", center=True)
    assert cal.P.shape == (L, hkv, d, d)
    assert (cal.layers, cal.heads_q, cal.heads_kv, cal.d, cal.group_size) == (L, hq, hkv, d, 3)
    assert cal.n_samples == 3 * n + n + 5 and cal.center and cal.source == "both"
    assert cal.created_by.startswith("aqua_model.kernels.calibration")
    for layer in range(L):
        for h in range(hkv):
            want = fit_projection(
                queries[layer, 3 * h : 3 * h + 3].reshape(-1, d), keys[layer, h], center=True
            )
            torch.testing.assert_close(cal.P[layer, h], want)
    with pytest.raises(dataclasses_frozen_error()):
        cal.d = 4  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_save_load_round_trip(tmp_path) -> None:
    g = _gen(12)
    cal = calibrate(
        torch.randn(1, 4, 30, 8, generator=g), torch.randn(1, 2, 30, 8, generator=g), source="keys"
    )
    path = tmp_path / "cal.pt"
    save_calibration(cal, path)
    back = load_calibration(path)
    assert isinstance(back, Calibration)
    torch.testing.assert_close(back.P, cal.P)
    for name in ("d", "layers", "heads_q", "heads_kv", "center", "source", "n_samples", "created_by"):
        assert getattr(back, name) == getattr(cal, name)


def test_load_rejects_bad_files(tmp_path) -> None:
    g = _gen(13)
    cal = calibrate(torch.randn(1, 2, 30, 8, generator=g), torch.randn(1, 2, 30, 8, generator=g))
    path = tmp_path / "cal.pt"
    save_calibration(cal, path)
    payload = torch.load(path, weights_only=True)

    def write(**changes):
        bad = dict(payload, **changes)
        torch.save(bad, path)

    write(schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ValueError, match="schema_version"):
        load_calibration(path)
    write(kind="something else")
    with pytest.raises(ValueError, match="not an AQUA calibration"):
        load_calibration(path)
    write(P=payload["P"] * 2.0)
    with pytest.raises(ValueError, match="not orthogonal"):
        load_calibration(path)
    write(P=payload["P"][:, :, :4, :4])
    with pytest.raises(ValueError, match="shape"):
        load_calibration(path)
    bad = dict(payload)
    del bad["source"]
    torch.save(bad, path)
    with pytest.raises(ValueError, match="misses fields"):
        load_calibration(path)


def test_bad_inputs_name_the_argument() -> None:
    q = torch.randn(10, 8)
    with pytest.raises(ValueError, match="head dim d"):
        fit_projection(q, torch.randn(10, 6))
    with pytest.raises(TypeError, match="queries must have a floating dtype"):
        fit_projection(torch.ones(10, 8, dtype=torch.int64), q)
    with pytest.raises(ValueError, match="keys must be finite"):
        fit_projection(q, torch.full((3, 8), float("nan")))
    with pytest.raises(ValueError, match="source must be one of"):
        fit_projection(q, q, source="values")
    with pytest.raises(ValueError, match=r"queries must have shape \[n_q, d\]"):
        fit_projection(torch.randn(2, 10, 8), q)
    with pytest.raises(TypeError, match="keys must be a torch.Tensor"):
        fit_projection(q, None)
    with pytest.raises(ValueError, match="multiple of heads_kv"):
        calibrate(torch.randn(1, 3, 10, 8), torch.randn(1, 2, 10, 8))
    with pytest.raises(ValueError, match="layers"):
        calibrate(torch.randn(2, 4, 10, 8), torch.randn(1, 2, 10, 8))
    with pytest.raises(ValueError, match="head dim"):
        calibrate(torch.randn(1, 4, 10, 8), torch.randn(1, 2, 10, 4))
    with pytest.raises(TypeError, match="floating dtype"):
        calibrate(torch.randn(1, 4, 10, 8), torch.ones(1, 2, 10, 8, dtype=torch.int32))
