"""Known-answer tests that need a calibrated P, and a small end-to-end study on synthetic heads.

P comes from the kernels' ``fit_projection``; while that module is absent a local stand-in
(an SVD of the stacked queries and keys) is used, in this test file only.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aqua_model.fidelity.activations import Captured  # noqa: E402
from aqua_model.fidelity.metrics import METRICS, fidelity_metrics, segment_stats  # noqa: E402
from aqua_model.fidelity.study import ROW_FIELDS, aggregate, calibrate, run_study, smallest_k  # noqa: E402
from aqua_model.fidelity.synthetic import make_head  # noqa: E402

EXACT_TOL = 1e-8
D = 16
RANK = 5


def _stand_in_fit(queries, keys, *, center=False, source="both"):
    assert center is False and source == "both"
    _, _, vh = torch.linalg.svd(torch.cat([queries, keys]), full_matrices=True)
    return vh.T


@pytest.fixture(scope="module")
def fit():
    try:
        from aqua_model.kernels.calibration import fit_projection
    except ImportError:
        return _stand_in_fit
    return fit_projection


def test_projection_is_orthogonal_and_sorted(fit):
    head = make_head(n_queries=200, n_keys=200, d=D, seed=1)
    proj = calibrate(queries=head.queries, keys=head.keys, fit=fit)
    assert np.allclose(proj.T @ proj, np.eye(D), atol=1e-10)
    var = ((np.vstack([head.queries, head.keys]) @ proj) ** 2).sum(axis=0)
    assert np.all(np.diff(var) <= 1e-9 * var[0])


@pytest.mark.parametrize("method", ["aqua", "loki"])
def test_rank_r_is_exact_at_k_at_least_r(fit, method):
    head = make_head(n_queries=80, n_keys=90, d=D, kind="rank", rank=RANK, n_outliers=2, seed=4)
    proj = calibrate(queries=head.queries, keys=head.keys, fit=fit)
    for k in range(RANK, D + 1):
        m = fidelity_metrics(
            queries=head.queries, keys=head.keys, values=head.values, projection=proj, method=method, k=k
        )
        assert m["energy"] == pytest.approx(1.0, abs=EXACT_TOL)
        assert m["score_rel_err"] < EXACT_TOL and m["output_rel_err"] < EXACT_TOL and m["kl_nats"] < EXACT_TOL
        assert m["top1_agreement"] == 1.0 and m["top8_agreement"] == 1.0
    below = fidelity_metrics(
        queries=head.queries, keys=head.keys, values=head.values, projection=proj, method=method, k=RANK - 1
    )
    assert below["score_rel_err"] > 1e-3


def test_rank_r_is_not_exact_for_sparq_without_rotation(fit):
    head = make_head(n_queries=80, n_keys=90, d=D, kind="rank", rank=RANK, seed=4)
    proj = calibrate(queries=head.queries, keys=head.keys, fit=fit)
    m = fidelity_metrics(
        queries=head.queries, keys=head.keys, values=head.values, projection=proj, method="sparq", k=RANK
    )
    assert m["score_rel_err"] > 1e-2


def test_aqua_keeps_more_energy_than_sparq_on_rotated_outliers(fit):
    head = make_head(
        n_queries=300, n_keys=300, d=D, kind="power", alpha=0.5, n_outliers=3, rotate=True, seed=9
    )
    proj = calibrate(queries=head.queries, keys=head.keys, fit=fit)
    ks = tuple(range(1, D + 1))
    energy = {}
    for method in ("aqua", "sparq", "random"):
        stats = segment_stats(
            queries=head.queries,
            keys=head.keys,
            values=head.values,
            projection=proj,
            method=method,
            ks=ks,
            rng=np.random.default_rng(0),
        )
        energy[method] = np.array([stats[k].finalize()["energy"] for k in ks])
    assert np.all(energy["aqua"] >= energy["sparq"] - 1e-12)
    assert energy["aqua"][2] > energy["sparq"][2] + 0.1
    assert np.all(energy["sparq"] >= energy["random"] - 0.05)


def _captured(
    seed: int, n_layers: int = 2, n_heads: int = 2, seg_len: int = 20, n_segments: int = 2
) -> Captured:
    tokens = seg_len * n_segments
    arrays = {"queries": [], "keys": [], "values": []}
    for i in range(n_layers * n_heads):
        head = make_head(
            n_queries=tokens, n_keys=tokens, d=8, kind="power", n_outliers=1, seed=seed * 100 + i
        )
        arrays["queries"].append(head.queries)
        arrays["keys"].append(head.keys)
        arrays["values"].append(head.values)
    shaped = {name: np.stack(a).reshape(n_layers, n_heads, tokens, 8) for name, a in arrays.items()}
    return Captured(**shaped, boundaries=np.arange(0, tokens + 1, seg_len))


def test_run_study_streams_rows_and_aggregates(fit, tmp_path):
    cal, ev = _captured(1), {"a": _captured(2), "b": _captured(3)}
    path = tmp_path / "rows.csv"
    rows = run_study(calibration=cal, evaluations=ev, ks=(1, 4, 8), csv_path=path, progress=False, fit=fit)
    assert len(rows) == 2 * 2 * 2 * 4 * 3  # layers x heads x datasets x methods x ks
    with open(path, newline="") as fh:
        on_disk = list(csv.DictReader(fh))
    assert len(on_disk) == len(rows) and tuple(on_disk[0]) == ROW_FIELDS
    summary = aggregate(rows)
    assert len(summary) == 2 * 4 * 3 and all(s["n_heads"] == 4 for s in summary)
    for s in summary:
        if s["k"] == 8:
            assert s["output_rel_err"] < EXACT_TOL and s["energy"] == pytest.approx(1.0)
    assert set(METRICS) <= set(summary[0])
    assert smallest_k(summary, dataset="a", method="aqua", metric="output_rel_err", threshold=EXACT_TOL) <= 8
    again = run_study(calibration=cal, evaluations=ev, ks=(1, 4, 8), progress=False, fit=fit)
    assert again == rows  # seeded, also for the random method


def test_run_study_rejects_mismatched_sets(fit):
    with pytest.raises(ValueError, match="evaluations\\['x'\\] must have"):
        run_study(
            calibration=_captured(1), evaluations={"x": _captured(2, n_heads=3)}, progress=False, fit=fit
        )
