"""The fidelity study: every metric against k, per layer and head, for every method and text.

P is calibrated per layer and head on one set of activations (English text) with the
kernels' :func:`aqua_model.kernels.calibration.fit_projection` (the one SVD calibration of
the package), then evaluated on other sets (held-out English, another language). Rows are
streamed to a CSV file as each head finishes, so an interrupted run keeps what it computed.
"""

from __future__ import annotations

import csv
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aqua_model._checks import check_choice, check_int
from aqua_model.fidelity.methods import METHODS
from aqua_model.fidelity.metrics import METRICS, SegmentStats, segment_stats

ROW_FIELDS = ("dataset", "layer", "head", "method", "k", "d", "byte_ratio", "n_queries", *METRICS)
"""Columns of the per-head CSV."""

SUMMARY_KEYS = ("dataset", "method", "k")
"""Grouping of the aggregated table (mean over layers and heads)."""

LAYER_KEYS = ("dataset", "layer", "method", "k")
"""Grouping of the per-layer table (mean over heads)."""

RANDOM_STREAM = 0x5EED
"""Fixed first word of the random-method seed sequence, so its draws never reuse another stream."""


class ActivationSet(Protocol):
    """What the study needs: [L, H, T, d] queries, keys, values and segment slices."""

    queries: np.ndarray
    keys: np.ndarray
    values: np.ndarray

    def segments(self) -> list[slice]: ...


FitProjection = Callable[..., Any]


def default_fit() -> FitProjection:
    """Return the package's SVD calibration (needs torch)."""
    from aqua_model.kernels.calibration import fit_projection

    return fit_projection


def calibrate(*, queries: np.ndarray, keys: np.ndarray, fit: FitProjection | None = None) -> np.ndarray:
    """Return P (float64 [d, d]) fitted on ``queries`` and ``keys`` (uncentred, both sources)."""
    import torch

    fit = default_fit() if fit is None else fit
    proj = fit(
        torch.from_numpy(np.ascontiguousarray(queries)),
        torch.from_numpy(np.ascontiguousarray(keys)),
        center=False,
        source="both",
    )
    out = (
        proj.detach().cpu().numpy().astype(np.float64)
        if hasattr(proj, "detach")
        else np.asarray(proj, dtype=np.float64)
    )
    d = queries.shape[1]
    if out.shape != (d, d):
        raise ValueError(f"fit must return a ({d}, {d}) projection, got shape {out.shape}")
    return out


CSV_SIGNIFICANT_DIGITS = 6
"""Significant digits of floats in the streamed CSV (metrics are far less precise than that)."""


def _csv_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (f"{v:.{CSV_SIGNIFICANT_DIGITS}g}" if isinstance(v, float) else v) for k, v in row.items()}


@cache
def decode_byte_ratio(k: int, d: int) -> float:
    """Bytes one AQUA decode step reads over dense, from the cost model: (k/d + 1)/2."""
    from aqua_model.costs.memory import decode_read_bytes
    from aqua_model.costs.symbols import d as d_sym, k as k_sym

    k = check_int("k", k, minimum=0)
    d = check_int("d", d, minimum=1)
    ratio = decode_read_bytes("aqua") / decode_read_bytes("dense")
    return float(ratio.subs({k_sym: k, d_sym: d}))


def default_ks(d: int) -> tuple[int, ...]:
    """Budgets swept by default: 1, 2, then every d/16 step up to d (all k for small d)."""
    d = check_int("d", d, minimum=1)
    step = max(1, d // 16)
    return tuple(sorted({1, 2, *range(step, d + 1, step), d}))


def head_rows(
    *,
    dataset: str,
    layer: int,
    head: int,
    data: ActivationSet,
    projection: np.ndarray,
    ks: Sequence[int],
    methods: Sequence[str],
    seed: int,
) -> list[dict[str, Any]]:
    """Return one row per (method, k) for one head of one activation set."""
    d = projection.shape[0]
    rows = []
    for method in methods:
        rng = np.random.default_rng([RANDOM_STREAM, seed, layer, head])
        pooled: dict[int, SegmentStats] = defaultdict(SegmentStats)
        for seg in data.segments():
            stats = segment_stats(
                queries=data.queries[layer, head, seg],
                keys=data.keys[layer, head, seg],
                values=data.values[layer, head, seg],
                projection=projection,
                method=method,
                ks=tuple(ks),
                rng=rng,
            )
            for k, s in stats.items():
                pooled[k] = pooled[k] + s
        for k in ks:
            rows.append(
                {
                    "dataset": dataset,
                    "layer": layer,
                    "head": head,
                    "method": method,
                    "k": int(k),
                    "d": d,
                    "byte_ratio": decode_byte_ratio(int(k), d),
                    "n_queries": pooled[k].n_queries,
                    **pooled[k].finalize(),
                }
            )
    return rows


def run_study(
    *,
    calibration: ActivationSet,
    evaluations: Mapping[str, ActivationSet],
    ks: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    csv_path: str | Path | None = None,
    progress: bool = True,
    fit: FitProjection | None = None,
) -> list[dict[str, Any]]:
    """Calibrate P per layer and head on ``calibration``; return metric rows for every evaluation set.

    ``csv_path`` (optional) receives the rows of :data:`ROW_FIELDS` head by head, flushed.
    ``fit`` defaults to :func:`aqua_model.kernels.calibration.fit_projection`.
    """
    n_layers, n_heads, _, d = calibration.queries.shape
    ks = default_ks(d) if ks is None else tuple(check_int("ks", k, minimum=1, maximum=d) for k in ks)
    methods = tuple(check_choice("methods", m, METHODS) for m in methods)
    seed = check_int("seed", seed, minimum=0)
    if not evaluations:
        raise ValueError("evaluations must name at least one activation set, got none")
    for name, data in evaluations.items():
        if data.queries.shape[:2] != (n_layers, n_heads) or data.queries.shape[3] != d:
            raise ValueError(
                f"evaluations[{name!r}] must have layers/heads/dim {(n_layers, n_heads, d)}, got {data.queries.shape}"
            )
    handle = None
    writer = None
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(csv_path, "w", newline="", encoding="utf-8")
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    total = n_layers * n_heads
    try:
        for layer in range(n_layers):
            for head in range(n_heads):
                proj = calibrate(
                    queries=calibration.queries[layer, head], keys=calibration.keys[layer, head], fit=fit
                )
                for name, data in evaluations.items():
                    new = head_rows(
                        dataset=name,
                        layer=layer,
                        head=head,
                        data=data,
                        projection=proj,
                        ks=ks,
                        methods=methods,
                        seed=seed,
                    )
                    rows.extend(new)
                    if writer is not None:
                        writer.writerows([_csv_row(r) for r in new])
                if handle is not None:
                    handle.flush()
                if progress:
                    done = layer * n_heads + head + 1
                    print(
                        f"\rfidelity: layer {layer + 1}/{n_layers} head {head + 1}/{n_heads} "
                        f"({done}/{total}, {time.perf_counter() - start:.1f} s)",
                        end="" if done < total else "\n",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if handle is not None:
            handle.close()
    return rows


def aggregate(rows: Iterable[Mapping[str, Any]], *, by: Sequence[str] = SUMMARY_KEYS) -> list[dict[str, Any]]:
    """Return the mean of every metric over the rows that share the ``by`` columns.

    Also reports ``n_heads`` (rows averaged) and the worst head's ``output_rel_err_max``.
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[key] for key in by)].append(row)
    if not groups:
        raise ValueError("rows must not be empty")
    out = []
    for key, members in groups.items():
        first = members[0]
        entry: dict[str, Any] = dict(zip(by, key))
        entry["d"] = int(first["d"])
        entry["byte_ratio"] = float(first["byte_ratio"])
        entry["n_heads"] = len(members)
        for metric in METRICS:
            entry[metric] = float(np.mean([float(m[metric]) for m in members]))
        entry["output_rel_err_max"] = float(max(float(m["output_rel_err"]) for m in members))
        out.append(entry)
    method_order = {m: i for i, m in enumerate(METHODS)}
    out.sort(key=lambda e: tuple(method_order.get(e[c], 0) if c == "method" else e[c] for c in by))
    return out


def smallest_k(
    summary: Iterable[Mapping[str, Any]],
    *,
    dataset: str,
    method: str,
    metric: str,
    threshold: float,
    above: bool = False,
) -> int | None:
    """Smallest k whose ``metric`` is <= ``threshold`` (>= when ``above``), or None if no k is."""
    metric = check_choice("metric", metric, METRICS)
    ok = [
        int(r["k"])
        for r in summary
        if r["dataset"] == dataset
        and r["method"] == method
        and ((float(r[metric]) >= threshold) if above else (float(r[metric]) <= threshold))
    ]
    return min(ok) if ok else None
