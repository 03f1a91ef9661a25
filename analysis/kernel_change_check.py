"""Does the frozen time model predict the shipped one-launch AQUA decode as well as the kernel it was fitted on?

The calibrated profile ``validation/results/h200/h200-fit-1675854939.toml`` (issue 21, second fit
run) was fitted on the one-launch kernel at commit 63e3845. Since then the kernel prefetches one V
block before its selection, merges in tiles of 16384 partial values instead of 8192
(``aqua_model.costs.split_rule.MERGE_TILE_VALUES``, which the model reads through ``merge_rounds``)
and launches differently on the host (no effect on a CUDA-graph time). This script scores the
frozen profile, out of sample, on both kernels' H200 measurements, all written by
``validation/bench_decode_v3.py`` (one JSONL row per shape; CUDA-graph medians ``aqua_graph_s``, the
``aqua_decode`` call alone on an ``AquaKVCache``'s paged dim-major keys, and ``sdpa_graph_s``, torch
SDPA's fastest backend):

* ``tables``: ``kernels-v4-final/decode_v3_tables.jsonl`` (old kernel: 70 bf16 + 3 fp16 rows) against
  ``kernels-v5-shipped/decode_v3_tables.jsonl`` (new kernel: the same 70 shapes in bf16 and fp16);
* ``targets``: ``kernels-v4-rule2/decode_v3_targets.jsonl`` (old kernel, after the split rule's last
  change) against ``kernels-v5-shipped/decode_v3_targets.jsonl`` (new kernel, the same 29 shapes);
* ``tables-sort`` / ``targets-sort``: the same old files against ``kernels-v5-sort`` (70 bf16 table
  shapes, 29 targets), the shipped kernel: ``kernels-v5-shipped`` still ranked per-head selections
  of groups of up to 3 heads, which the kernel now sorts (``HEAD_RANK_MAX_GROUP`` = 0).

For every row it predicts, with ``aqua_model.simulator.predict`` on the fitted profile (calibrated
mode, decode phase), the ``aqua-fused`` plan (the package's default ``aqua_decode`` call on rotated
dim-major keys, the plan the fit measured; the row's k and selection) and the ``dense-fused`` plan
(SDPA; k = d, group selection, as ``aqua_model.validate.runner.predictions`` predicts the baseline).
``aqua-fused`` rather than ``aqua-cache-step``: the measured call is ``aqua_decode`` on the cache's
keys, not the cache step (which also rotates q and the new key and writes them); with the one-launch
kernel's 64-token block, pages of 64 tokens give the same split count as unpaged aligned keys. The old
kernel's rows are predicted with the merge tile it ran (8192 values), the new kernel's with 16384
(the current code); a second table shows the AQUA errors with either tile on both.

It reports, per file pair, kernel and dtype, over all rows and over the shapes both kernels measured:
n and the median / p90 (linear interpolation) / max of |predicted / measured - 1| and the signed
median (bias) for the AQUA time, the SDPA time and the speedup (SDPA / AQUA), and the share of AQUA
times inside the profile's 80% interval; the change from old to new on the common shapes; the
shapes the model refuses (listed, never dropped silently); and which measured shapes also appear in
the fit's case files (``fit-1675854939-cases-{train,calibration,test}.jsonl``).

Usage: python analysis/kernel_change_check.py [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqua_model.costs import split_rule  # noqa: E402
from aqua_model.hardware import HardwareProfile, load  # noqa: E402
from aqua_model.simulator import Prediction, predict  # noqa: E402
from aqua_model.validate.report import ErrorStats, error_stats  # noqa: E402

H200 = Path(__file__).resolve().parents[1] / "validation" / "results" / "h200"
#: The fitted (frozen) profile of issue 21's second run.
PROFILE = H200 / "h200-fit-1675854939.toml"
#: The fit's case files, one per sample.
FIT_CASES = {role: H200 / f"fit-1675854939-cases-{role}.jsonl" for role in ("train", "calibration", "test")}
#: The plans predicted: the measured AQUA call and its SDPA baseline.
AQUA_PLAN, SDPA_PLAN = "aqua-fused", "dense-fused"
#: bench_decode_v3's dtype names (torch's) -> the model's storage dtype names.
DTYPES = {"bfloat16": "bf16", "float16": "fp16"}
#: Partial values per merge tile of each kernel: the fit's (63e3845) and the shipped one.
MERGE_TILES = {"old": 8192, "new": 16384}
KERNELS = tuple(MERGE_TILES)


@dataclass(frozen=True)
class FilePair:
    """One kind of measurement, taken on the old kernel and again on the new one."""

    name: str
    old: Path
    new: Path

    def path(self, kernel: str) -> Path:
        return self.old if kernel == "old" else self.new


PAIRS = (
    FilePair(
        "tables",
        H200 / "kernels-v4-final/decode_v3_tables.jsonl",
        H200 / "kernels-v5-shipped/decode_v3_tables.jsonl",
    ),
    FilePair(
        "targets",
        H200 / "kernels-v4-rule2/decode_v3_targets.jsonl",
        H200 / "kernels-v5-shipped/decode_v3_targets.jsonl",
    ),
    FilePair(
        "tables-sort",
        H200 / "kernels-v4-final/decode_v3_tables.jsonl",
        H200 / "kernels-v5-sort/decode_v3_tables.jsonl",
    ),
    FilePair(
        "targets-sort",
        H200 / "kernels-v4-rule2/decode_v3_targets.jsonl",
        H200 / "kernels-v5-sort/decode_v3_targets.jsonl",
    ),
)


@dataclass(frozen=True)
class Shape:
    """One decode shape as the model takes it (dtype in the model's names)."""

    B: int
    hq: int
    hkv: int
    N: int
    d: int
    k: int
    selection: str
    dtype: str

    def label(self) -> str:
        return (
            f"B={self.B} {self.hq}/{self.hkv} N={self.N} d={self.d} k={self.k} {self.selection} {self.dtype}"
        )


@dataclass(frozen=True)
class Measured:
    """One bench row: its shape, what produced it and its two CUDA-graph medians (s)."""

    shape: Shape
    source: str
    aqua_s: float
    sdpa_s: float


@dataclass(frozen=True)
class Predicted:
    """The calibrated predictions at one shape (s), with the AQUA time's 80% interval."""

    aqua_s: float
    sdpa_s: float
    aqua_low_s: float | None = None
    aqua_high_s: float | None = None


@dataclass(frozen=True)
class Scored:
    """A measured row with its prediction, or the reason the model refused the shape."""

    row: Measured
    predicted: Predicted | None
    refused: str = ""


def model_dtype(name: str) -> str:
    """The model's dtype name of a bench row's torch dtype name."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def read_measured(path: Path) -> list[Measured]:
    """Every row of a bench_decode_v3 JSONL file (each must carry both graph times)."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        shape = Shape(
            r["B"], r["hq"], r["hkv"], r["N"], r["d"], r["k"], r["selection"], model_dtype(r["dtype"])
        )
        out.append(Measured(shape, r["source"], float(r["aqua_graph_s"]), float(r["sdpa_graph_s"])))
    return out


@contextmanager
def merge_tile(values: int) -> Iterator[None]:
    """Predict with the one-launch kernel's merge tile set to ``values`` partial values."""
    saved = split_rule.MERGE_TILE_VALUES
    split_rule.MERGE_TILE_VALUES = values
    try:
        yield
    finally:
        split_rule.MERGE_TILE_VALUES = saved


def predict_shape(shape: Shape, profile: HardwareProfile) -> Predicted:
    """The calibrated AQUA (aqua-fused) and SDPA (dense-fused) decode times at ``shape``;
    raises (ValueError) where the model refuses the shape."""

    def one(plan: str, k: int, selection: str) -> Prediction:
        return predict(
            plan=plan,
            phase="decode",
            context=shape.N,
            batch=shape.B,
            heads_q=shape.hq,
            heads_kv=shape.hkv,
            d=shape.d,
            k=k,
            dtype=shape.dtype,
            selection=selection,
            gpu=profile,
        )

    aqua = one(AQUA_PLAN, shape.k, shape.selection)
    sdpa = one(SDPA_PLAN, shape.d, "group")  # the baseline as validate.runner.predictions takes it
    return Predicted(aqua.total_s, sdpa.total_s, aqua.low_s, aqua.high_s)


def score(rows: Sequence[Measured], profile: HardwareProfile, merge_tile_values: int) -> list[Scored]:
    """Each row with its prediction, or the model's refusal (kept, with its message)."""
    out = []
    with merge_tile(merge_tile_values):
        for row in rows:
            try:
                out.append(Scored(row, predict_shape(row.shape, profile)))
            except ValueError as exc:
                out.append(Scored(row, None, f"{type(exc).__name__}: {exc}"))
    return out


def error_summary(scored: Sequence[Scored]) -> dict[str, ErrorStats]:
    """Error statistics (|p/m - 1| median, p90, max; signed median) of the AQUA time, the SDPA
    time and the speedup SDPA / AQUA over the predicted rows of ``scored``."""
    ok = [s for s in scored if s.predicted is not None]
    pa = [s.predicted.aqua_s for s in ok if s.predicted]
    ps = [s.predicted.sdpa_s for s in ok if s.predicted]
    ma = [s.row.aqua_s for s in ok]
    ms = [s.row.sdpa_s for s in ok]
    return {
        "aqua": error_stats(pa, ma),
        "sdpa": error_stats(ps, ms),
        "speedup": error_stats([s / a for s, a in zip(ps, pa)], [s / a for s, a in zip(ms, ma)]),
    }


def interval_share(scored: Sequence[Scored]) -> float:
    """Share of predicted rows whose measured AQUA time lies in the profile's 80% interval (NaN
    where none carries an interval)."""
    inside = [
        s.predicted.aqua_low_s <= s.row.aqua_s <= s.predicted.aqua_high_s
        for s in scored
        if s.predicted and s.predicted.aqua_low_s is not None and s.predicted.aqua_high_s is not None
    ]
    return float(np.mean(inside)) if inside else float("nan")


def common_shapes(old: Sequence[Measured], new: Sequence[Measured]) -> set[Shape]:
    """Shapes measured on both kernels."""
    return {r.shape for r in old} & {r.shape for r in new}


def fit_case_keys(paths: dict[str, Path]) -> dict[tuple[str, str], set[Shape]]:
    """(role, plan) -> the decode shapes of the fit's case files (SDPA shapes with k = d, group)."""
    out: dict[tuple[str, str], set[Shape]] = {}
    for role, path in paths.items():
        for line in path.read_text().splitlines():
            c = json.loads(line)
            if c.get("kind") != "case" or c.get("phase") != "decode":
                continue
            shape = Shape(
                c["batch"],
                c["heads_q"],
                c["heads_kv"],
                c["context"],
                c["d"],
                c["k"],
                c["selection"],
                c["dtype"],
            )
            out.setdefault((role, c["plan"]), set()).add(shape)
    return out


def sdpa_key(shape: Shape) -> Shape:
    """The SDPA case of a shape: k = d, group selection."""
    return Shape(shape.B, shape.hq, shape.hkv, shape.N, shape.d, shape.d, "group", shape.dtype)


def fit_overlap(
    rows: Sequence[Measured], fit: dict[tuple[str, str], set[Shape]]
) -> list[tuple[str, str, Shape]]:
    """(role, plan, shape) for every measured shape also in the fit's cases, AQUA and SDPA."""
    found = []
    for row in rows:
        for (role, plan), shapes in sorted(fit.items()):
            key = row.shape if plan == AQUA_PLAN else sdpa_key(row.shape) if plan == SDPA_PLAN else None
            if key is not None and key in shapes:
                found.append((role, plan, row.shape))
    return found


def shown(path: Path) -> str:
    """A results path as the report names it: relative to the H200 results folder when inside it."""
    return str(path.relative_to(H200)) if path.is_relative_to(H200) else str(path)


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def signed_pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:+.1f}%"


def stats_cells(st: ErrorStats) -> list[str]:
    return [pct(st.median_abs), pct(st.p90_abs), pct(st.max_abs), signed_pct(st.median_signed)]


@dataclass(frozen=True)
class Group:
    """The scored rows of one (file pair, kernel, dtype, shape subset)."""

    pair: str
    kernel: str
    dtype: str
    subset: str
    scored: tuple[Scored, ...]


def groups(scored: dict[tuple[str, str], list[Scored]], pairs: Sequence[FilePair] = PAIRS) -> list[Group]:
    """Every (pair, dtype, subset, kernel) group: subset "all" rows, or "common" (shapes both
    kernels measured)."""
    out = []
    for pair in pairs:
        old, new = scored[(pair.name, "old")], scored[(pair.name, "new")]
        both = common_shapes([s.row for s in old], [s.row for s in new])
        dtypes = sorted({s.row.shape.dtype for s in old + new})
        for dtype in dtypes:
            for subset in ("all", "common"):
                for kernel, rows in (("old", old), ("new", new)):
                    pick = tuple(
                        s
                        for s in rows
                        if s.row.shape.dtype == dtype and (subset == "all" or s.row.shape in both)
                    )
                    if pick:
                        out.append(Group(pair.name, kernel, dtype, subset, pick))
    return out


def main_table(gs: Sequence[Group]) -> list[str]:
    head = (
        "| rows | kernel | dtype | shapes | n | AQUA median | p90 | max | bias | SDPA median | p90 | max | bias "
        "| speedup median | p90 | max | bias | AQUA in 80% interval |"
    )
    lines = [head, "|---|---|---|---|---:|" + "---:|" * 13]
    for g in gs:
        st = error_summary(g.scored)
        cells = [g.pair, g.kernel, g.dtype, g.subset, str(st["aqua"].n)]
        for key in ("aqua", "sdpa", "speedup"):
            cells += stats_cells(st[key])
        cells.append(pct(interval_share(g.scored)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def change_table(gs: Sequence[Group]) -> list[str]:
    """New minus old on the common shapes, per pair and dtype: the error medians' change, and the
    measured and predicted AQUA time ratios new / old (medians over the shapes)."""
    lines = [
        "| rows | dtype | n | AQUA median |e| old -> new | AQUA bias old -> new | SDPA median |e| old -> new "
        "| speedup median |e| old -> new | measured AQUA new/old | predicted AQUA new/old | measured SDPA new/old "
        "| measured speedup new/old |",
        "|---|---|---:|---|---|---|---|---:|---:|---:|---:|",
    ]
    index = {(g.pair, g.kernel, g.dtype, g.subset): g for g in gs}
    for name in dict.fromkeys(g.pair for g in gs):
        for dtype in sorted({g.dtype for g in gs if g.pair == name}):
            old, new = index.get((name, "old", dtype, "common")), index.get((name, "new", dtype, "common"))
            if old is None or new is None:
                continue
            so, sn = error_summary(old.scored), error_summary(new.scored)
            by_old = {s.row.shape: s for s in old.scored if s.predicted}
            paired = [(by_old[s.row.shape], s) for s in new.scored if s.predicted and s.row.shape in by_old]
            meas_a = float(np.median([n.row.aqua_s / o.row.aqua_s for o, n in paired]))
            pred_a = float(
                np.median(
                    [
                        n.predicted.aqua_s / o.predicted.aqua_s
                        for o, n in paired
                        if o.predicted and n.predicted
                    ]
                )
            )
            meas_s = float(np.median([n.row.sdpa_s / o.row.sdpa_s for o, n in paired]))
            meas_sp = float(
                np.median([(n.row.sdpa_s / n.row.aqua_s) / (o.row.sdpa_s / o.row.aqua_s) for o, n in paired])
            )
            lines.append(
                f"| {name} | {dtype} | {len(paired)} | {pct(so['aqua'].median_abs)} -> {pct(sn['aqua'].median_abs)} "
                f"| {signed_pct(so['aqua'].median_signed)} -> {signed_pct(sn['aqua'].median_signed)} "
                f"| {pct(so['sdpa'].median_abs)} -> {pct(sn['sdpa'].median_abs)} "
                f"| {pct(so['speedup'].median_abs)} -> {pct(sn['speedup'].median_abs)} "
                f"| {meas_a:.3f} | {pred_a:.3f} | {meas_s:.3f} | {meas_sp:.3f} |"
            )
    return lines


def merge_tile_table(
    rows: dict[tuple[str, str], list[Measured]], profile: HardwareProfile, pairs: Sequence[FilePair] = PAIRS
) -> list[str]:
    """AQUA time errors of each file (all dtypes) predicted with either merge tile."""
    lines = [
        "| rows | kernel | merge tile | n | AQUA median | p90 | max | bias | rows predicted differently |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pair in pairs:
        for kernel in KERNELS:
            scored = {
                tile: score(rows[(pair.name, kernel)], profile, tile)
                for tile in sorted(set(MERGE_TILES.values()))
            }
            base = scored[MERGE_TILES[kernel]]
            for tile, sc in scored.items():
                st = error_summary(sc)["aqua"]
                differ = sum(
                    1
                    for a, b in zip(sc, base)
                    if a.predicted and b.predicted and a.predicted.aqua_s != b.predicted.aqua_s
                )
                own = " (its own)" if tile == MERGE_TILES[kernel] else ""
                lines.append(
                    f"| {pair.name} | {kernel} | {tile}{own} | {st.n} | "
                    + " | ".join(stats_cells(st))
                    + f" | {differ} |"
                )
    return lines


def build_report(
    pairs: Sequence[FilePair] = PAIRS,
    profile_path: Path = PROFILE,
    fit_cases: dict[str, Path] | None = None,
) -> tuple[str, dict[tuple[str, str], list[Scored]]]:
    """The Markdown report and the scored rows, keyed (pair name, kernel)."""
    profile = load(profile_path)
    rows = {(p.name, kernel): read_measured(p.path(kernel)) for p in pairs for kernel in KERNELS}
    scored = {key: score(r, profile, MERGE_TILES[key[1]]) for key, r in rows.items()}
    gs = groups(scored, pairs)
    out = [
        f"Profile: `{profile_path.name}` (calibrated). Plans: `{AQUA_PLAN}` (AQUA, the row's k and selection) and "
        f"`{SDPA_PLAN}` (SDPA, k = d), decode. Errors are predicted / measured - 1 of CUDA-graph medians; "
        'bias is the signed median; shapes "common": measured on both kernels.',
        "",
        "Rows per file: "
        + "; ".join(
            f"{p.name}/{kernel} `{shown(p.path(kernel))}` {len(rows[(p.name, kernel)])}"
            for p in pairs
            for kernel in KERNELS
        ),
        "",
        *main_table(gs),
        "",
        "Change from the old kernel to the new one (common shapes):",
        "",
        *change_table(gs),
        "",
        "AQUA time errors with either merge tile (8192: the code at the fit's commit; 16384: the current code):",
        "",
        *merge_tile_table(rows, profile, pairs),
        "",
    ]
    refused = [(key, s) for key, sc in scored.items() for s in sc if s.predicted is None]
    out.append(f"Shapes the model refuses: {len(refused) or 'none'}")
    out += [f"- {p}/{k}: {s.row.shape.label()} ({s.row.source}): {s.refused}" for (p, k), s in refused]
    fit = fit_case_keys(FIT_CASES if fit_cases is None else fit_cases)
    overlaps = [(key, o) for key, r in rows.items() for o in fit_overlap(r, fit)]
    out.append("")
    out.append(f"Measured shapes also in the fit's case files: {len(overlaps) or 'none'}")
    out += [f"- {p}/{k}: {shape.label()} in {role} ({plan})" for (p, k), (role, plan, shape) in overlaps]
    return "\n".join(out) + "\n", scored


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    args = ap.parse_args(argv)
    text, _ = build_report()
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
