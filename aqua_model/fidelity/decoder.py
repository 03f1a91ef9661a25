"""End-to-end quality of AQUA and its peers inside a decoder: perplexity, top-1 agreement, KL.

Held-out text is cut into segments of ``segment_tokens`` consecutive tokens; each segment runs
as one sequence without a cache (teacher forcing), and tokens 1 .. T-1 of it are predicted.
Against the unmodified model's next-token distribution on the same positions, every
configuration (:class:`Config`: method, k, selection, stored dims m, H2O budget, calibration
language) yields per-segment sums:

- ``nll_sum``: sum of -log p_approx(next token) (perplexity = exp(sum nll / tokens));
- ``base_nll_sum``: the same for the unmodified model;
- ``kl_sum``: sum over positions of KL(p_base || p_approx) in nats;
- ``top1_hits``: positions where argmax p_approx equals argmax p_base.

Rows are streamed to a CSV, one per (dataset, config, segment), so a run can be resumed: rows
already there are not computed again. Confidence intervals come from a paired bootstrap over
segments (the same resampled segments for the configuration and the baseline).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SEGMENT_FIELDS = (
    "dataset",
    "config",
    "segment",
    "n_tokens",
    "nll_sum",
    "base_nll_sum",
    "kl_sum",
    "top1_hits",
)
"""Columns of the streamed per-segment CSV."""

BOOTSTRAP_RESAMPLES = 2000
"""Bootstrap resamples of the segments for every confidence interval."""

CONFIDENCE = 0.95
"""Two-sided level of every interval (percentile bootstrap)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """One approximate-attention configuration of the study.

    ``method``: "dense" (exact scores), "aqua", "sparq", "loki" or "random"; ``k``: kept
    coordinates per query (None for dense); ``stored_dims``: m rotated key coordinates kept in
    the cache (None: d); ``h2o_budget``: KV tokens kept per KV head (None: all); ``calib``:
    calibration language of P ("en" or "de"; ignored by unrotated methods).
    """

    method: str
    k: int | None = None
    selection: str = "per-head"
    stored_dims: int | None = None
    h2o_budget: int | None = None
    calib: str = "en"
    group: str = "sweep"

    @property
    def key(self) -> str:
        """A stable identifier, e.g. ``aqua-k48-per-head-cal_en``."""
        parts = [self.method]
        if self.k is not None:
            parts.append(f"k{self.k}")
        if self.method not in ("dense",):
            parts.append(self.selection)
        if self.stored_dims is not None:
            parts.append(f"m{self.stored_dims}")
        if self.h2o_budget is not None:
            parts.append(f"h2o{self.h2o_budget}")
        if self.method in ("aqua", "loki"):
            parts.append(f"cal_{self.calib}")
        return "-".join(parts)

    def apply_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`aqua_model.integrations.transformers.apply` (projections aside)."""
        return {
            "k": self.k,
            "method": self.method,
            "selection": self.selection,
            "stored_dims": self.stored_dims,
            "h2o_budget": self.h2o_budget,
        }


def kv_bytes_fraction(
    *, d: int, stored_dims: int | None, h2o_budget: int | None, segment_tokens: int
) -> float:
    """KV-cache bytes at the end of a segment over dense: tokens kept/T times (m + d)/(2d).

    Keys keep m of d coordinates, values all d; H2O keeps ``h2o_budget`` of the T tokens.
    """
    m = d if stored_dims is None else stored_dims
    tokens = 1.0 if h2o_budget is None else min(1.0, h2o_budget / segment_tokens)
    return tokens * (m + d) / (2 * d)


# --------------------------------------------------------------------------- text


def token_segments(ids: Sequence[int], *, length: int, max_segments: int | None = None) -> list[Any]:
    """Cut ``ids`` into consecutive 1-D int64 tensors of ``length`` tokens (the remainder is dropped)."""
    import torch

    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an integer >= 2 (one prediction needs two tokens), got {length!r}")
    n = len(ids) // length
    if max_segments is not None:
        if isinstance(max_segments, bool) or not isinstance(max_segments, int) or max_segments < 1:
            raise ValueError(f"max_segments must be a positive integer or None, got {max_segments!r}")
        n = min(n, max_segments)
    if n == 0:
        raise ValueError(f"ids must hold at least length={length} tokens, got {len(ids)}")
    t = torch.as_tensor(list(ids[: n * length]), dtype=torch.int64)
    return list(t.reshape(n, length))


# --------------------------------------------------------------------------- metrics


@dataclasses.dataclass
class Reference:
    """The unmodified model on one dataset: log-probs [S, T-1, V] of tokens 1..T-1 and targets [S, T-1]."""

    segments: list[Any]
    log_probs: Any
    targets: Any

    @property
    def n_segments(self) -> int:
        return len(self.segments)


def _logits(model: Any, batch: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(input_ids=batch, use_cache=False).logits[:, :-1].float()


def reference(model: Any, segments: Sequence[Any], *, batch_size: int = 4) -> Reference:
    """Run the model as it is on every segment and keep its next-token log-probs."""
    import torch

    if not segments:
        raise ValueError("segments must hold at least one segment, got none")
    parts = []
    for start in range(0, len(segments), batch_size):
        batch = torch.stack(list(segments[start : start + batch_size]))
        parts.append(torch.log_softmax(_logits(model, batch), dim=-1))
    stacked = torch.stack(list(segments))
    return Reference(list(segments), torch.cat(parts), stacked[:, 1:])


def segment_sums(approx_logits: Any, base_log_probs: Any, targets: Any) -> list[dict[str, float]]:
    """Per-segment sums (n_tokens, nll_sum, base_nll_sum, kl_sum, top1_hits) of a batch.

    approx_logits and base_log_probs [S, T-1, V], targets [S, T-1].
    """
    import torch

    logq = torch.log_softmax(approx_logits.float(), dim=-1)
    logp = base_log_probs
    idx = targets[..., None]
    nll = -logq.gather(-1, idx).squeeze(-1)
    base_nll = -logp.gather(-1, idx).squeeze(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)
    top1 = (logq.argmax(-1) == logp.argmax(-1)).float()
    return [
        {
            "n_tokens": int(targets.shape[1]),
            "nll_sum": float(nll[i].double().sum()),
            "base_nll_sum": float(base_nll[i].double().sum()),
            "kl_sum": float(kl[i].double().sum()),
            "top1_hits": float(top1[i].sum()),
        }
        for i in range(targets.shape[0])
    ]


# --------------------------------------------------------------------------- streaming runner


def read_segment_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a per-segment CSV (numbers converted); [] when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return []
        if tuple(reader.fieldnames) != SEGMENT_FIELDS:
            raise ValueError(f"{path} must have the columns {SEGMENT_FIELDS}, got {tuple(reader.fieldnames)}")
        for r in reader:
            rows.append(
                {
                    "dataset": r["dataset"],
                    "config": r["config"],
                    "segment": int(r["segment"]),
                    "n_tokens": int(r["n_tokens"]),
                    **{f: float(r[f]) for f in ("nll_sum", "base_nll_sum", "kl_sum", "top1_hits")},
                }
            )
    return rows


class Progress:
    """A one-line progress bar on stderr: done/total, elapsed time and an estimate of what is left."""

    WIDTH = 30

    def __init__(self, total: int, *, enabled: bool = True, label: str = "decoder") -> None:
        self.total = max(1, total)
        self.done = 0
        self.enabled = enabled
        self.label = label
        self.start = time.perf_counter()

    def step(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        filled = int(self.WIDTH * self.done / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        print(
            f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:.0f} s, ~{eta:.0f} s left {note[:40]:<40}",
            end="\n" if self.done >= self.total else "",
            file=sys.stderr,
            flush=True,
        )


def run_configs(
    *,
    model: Any,
    references: Mapping[str, Reference],
    configs: Sequence[Config],
    setup: Callable[[Config], None],
    csv_path: str | Path,
    batch_size: int = 4,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate every config on every dataset of ``references``; stream rows; skip rows already in ``csv_path``.

    ``setup(config)`` puts the model in that configuration (e.g. calls ``apply``). Returns all
    rows of the CSV after the run, resumed ones included.
    """
    import torch

    csv_path = Path(csv_path)
    done = {(r["dataset"], r["config"], r["segment"]) for r in read_segment_rows(csv_path)}
    keys = [c.key for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"configs must have distinct keys, got duplicates {sorted({k for k in keys if keys.count(k) > 1})}"
        )
    work = []
    for name, ref in references.items():
        for cfg in configs:
            todo = [i for i in range(ref.n_segments) if (name, cfg.key, i) not in done]
            if todo:
                work.append((name, cfg, todo))
    bar = Progress(sum(len(t) for _, _, t in work), enabled=progress)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not csv_path.exists() or csv_path.stat().st_size == 0
    with csv_path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SEGMENT_FIELDS)
        if new_file:
            writer.writeheader()
        for name, cfg, todo in work:
            setup(cfg)
            ref = references[name]
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                batch = torch.stack([ref.segments[i] for i in chunk])
                sums = segment_sums(_logits(model, batch), ref.log_probs[chunk], ref.targets[chunk])
                for i, s in zip(chunk, sums):
                    writer.writerow(
                        {
                            "dataset": name,
                            "config": cfg.key,
                            "segment": i,
                            **{k: f"{v:.10g}" for k, v in s.items()},
                        }
                    )
                handle.flush()
                bar.step(len(chunk), note=f"{name} {cfg.key}")
    return read_segment_rows(csv_path)


# --------------------------------------------------------------------------- statistics


def run_environment() -> dict[str, str]:
    """Where a study ran, for its run record: machine and CPU count, torch and its thread count,
    Python, and transformers when installed."""
    import os
    import platform

    import torch

    env = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__} threads {torch.get_num_threads()}",
        "python": platform.python_version(),
    }
    try:
        import transformers
    except ImportError:  # pragma: no cover - the decoder extra brings it
        return env
    env["transformers"] = transformers.__version__
    return env


def _interval(samples: np.ndarray) -> tuple[float, float]:
    tail = (1.0 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def summarize(
    rows: Iterable[Mapping[str, Any]], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (dataset, config): perplexities, their relative increase, KL and top-1, with bootstrap CIs.

    The bootstrap resamples segments with replacement, the same draws for a config and its
    baseline (paired), ``resamples`` times. ``significant`` says whether the interval of the
    perplexity increase excludes 0; ``base_ppl_lo/hi`` is the baseline's own interval.
    """
    groups: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = defaultdict(dict)
    for r in rows:
        groups[(str(r["dataset"]), str(r["config"]))][int(r["segment"])] = r
    if not groups:
        raise ValueError("rows must not be empty")
    out = {}
    for (dataset, config), by_seg in sorted(groups.items()):
        segs = sorted(by_seg)
        arr = {f: np.array([float(by_seg[s][f]) for s in segs]) for f in SEGMENT_FIELDS[3:]}
        n = arr["n_tokens"]
        rng = np.random.default_rng([seed, len(segs)])
        draws = rng.integers(0, len(segs), size=(resamples, len(segs)))
        tok = n[draws].sum(1)
        ppl_b = np.exp(arr["nll_sum"][draws].sum(1) / tok)
        base_b = np.exp(arr["base_nll_sum"][draws].sum(1) / tok)
        inc_b = ppl_b / base_b - 1.0
        kl_b = arr["kl_sum"][draws].sum(1) / tok
        top1_b = arr["top1_hits"][draws].sum(1) / tok
        total = n.sum()
        ppl = math.exp(arr["nll_sum"].sum() / total)
        base = math.exp(arr["base_nll_sum"].sum() / total)
        inc_lo, inc_hi = _interval(inc_b)
        entry: dict[str, Any] = {
            "dataset": dataset,
            "config": config,
            "segments": len(segs),
            "tokens": int(total),
            "ppl": ppl,
            "base_ppl": base,
            "ppl_increase": ppl / base - 1.0,
            "ppl_increase_lo": inc_lo,
            "ppl_increase_hi": inc_hi,
            "significant": not (inc_lo <= 0.0 <= inc_hi),
            "kl_nats": float(arr["kl_sum"].sum() / total),
            "top1_agreement": float(arr["top1_hits"].sum() / total),
        }
        entry["base_ppl_lo"], entry["base_ppl_hi"] = _interval(base_b)
        entry["kl_lo"], entry["kl_hi"] = _interval(kl_b)
        entry["top1_lo"], entry["top1_hi"] = _interval(top1_b)
        out[(dataset, config)] = entry
    return out
