"""Long-context quality: perplexity of the last positions of long segments, the prefix shared by all methods.

Named assumption (:data:`DEPLOYMENT`): prefill dense, decode sparse. The first N - S - 1
tokens of a segment of N tokens are prefilled once with the unmodified model into a dynamic
cache; then the S positions N - S - 1 .. N - 2 run as one chunk over that cache with each
method's attention, predicting the last S tokens N - S .. N - 1 (scored against the unmodified
model on the same chunk). Only the scored chunk's attention is approximate: the cached keys and
values are the dense model's, as AQUA's decode kernel reads them after a dense prefill. Methods
rotate the cached keys by P on the fly; P is orthogonal, so this is the projected-key cache's
computation (checked by the study's deployment check and by tests).

One window of text serves every context: contexts are processed in increasing order, the dense
prefill of context N continuing the cache of the previous context, so the whole study prefills
each window once (N_max tokens) and every method reuses it. Rows (one per window, context and
configuration) are appended to a JSONL file and fsync'ed; a rerun skips the windows whose rows
are all there. Each row carries per-block sums over ``block_tokens`` consecutive scored
positions, for a bootstrap over windows and blocks (:mod:`aqua_model.fidelity.blocked_bootstrap`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aqua_model._checks import check_int

SCHEMA_VERSION = 1
"""Version of the JSONL rows written by :func:`evaluate_window`."""

DEPLOYMENT = (
    "prefill dense, decode sparse: the first N - S - 1 tokens are prefilled by the unmodified model; the "
    "S scored positions run as one chunk with the method's attention over that dense cache"
)
"""The deployment the study measures (AQUA's decode kernel reads a cache filled by a dense prefill)."""

BASELINE = "baseline"
"""Config name of the unmodified model's row (its sums are the reference of every method row)."""

SUM_FIELDS = ("nll", "base_nll", "kl", "top1")
"""Per-block sums of each row: -log p(target), the same for the baseline, KL(base || method), top-1 hits."""


@dataclasses.dataclass(frozen=True)
class LongContextPlan:
    """Sizes of the study: contexts N (tokens), scored positions S, bootstrap block, prefill chunk."""

    contexts: tuple[int, ...]
    scored_tokens: int
    block_tokens: int
    prefill_chunk_tokens: int

    def __post_init__(self) -> None:
        if not self.contexts or list(self.contexts) != sorted(set(self.contexts)):
            raise ValueError(f"contexts must be distinct and increasing, got {self.contexts!r}")
        S = check_int("scored_tokens", self.scored_tokens, minimum=1)
        B = check_int("block_tokens", self.block_tokens, minimum=1, maximum=S)
        check_int("prefill_chunk_tokens", self.prefill_chunk_tokens, minimum=1)
        if S % B:
            raise ValueError(f"block_tokens must divide scored_tokens={S}, got {B}")
        for n in self.contexts:
            check_int("contexts[...]", n, minimum=S + 2)

    @property
    def blocks(self) -> int:
        return self.scored_tokens // self.block_tokens

    def span(self, context: int) -> tuple[int, int]:
        """(prefix tokens, end of the scored chunk) of ``context``: the chunk is ids[prefix:end],
        its targets ids[prefix + 1 : end + 1] (the last S tokens of the context)."""
        prefix = context - self.scored_tokens - 1
        return prefix, context - 1


def block_sums(
    approx_logits: Any, base_log_probs: Any, targets: Any, *, block_tokens: int
) -> dict[str, list[float]]:
    """Per-block sums of :data:`SUM_FIELDS` over [S, V] logits / base log-probs and [S] targets."""
    import torch

    logq = torch.log_softmax(approx_logits.float(), dim=-1)
    logp = base_log_probs
    idx = targets[:, None]
    nll = -logq.gather(-1, idx).squeeze(-1)
    base = -logp.gather(-1, idx).squeeze(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)
    top1 = (logq.argmax(-1) == logp.argmax(-1)).double()
    out = {}
    for name, v in (("nll", nll), ("base_nll", base), ("kl", kl), ("top1", top1)):
        out[name] = [float(x) for x in v.double().reshape(-1, block_tokens).sum(-1)]
    return out


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a study JSONL file ([] when absent); a truncated last line (an interrupted write) is dropped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1} is not a JSON row") from None
        if row.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path}:{i + 1} has schema_version {row.get('schema_version')!r}, expected {SCHEMA_VERSION}"
            )
        rows.append(row)
    return rows


class JsonlWriter:
    """Appends rows to a JSONL file, flushing and fsync'ing after each (a crash loses at most one row)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # an interrupted last line: start the next row on its own line
                    with self.path.open("a", encoding="utf-8") as out:
                        out.write("\n")

    def write(self, row: Mapping[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


class Progress:
    """A progress bar on stderr (tqdm when installed, else a plain line)."""

    def __init__(self, total: int, *, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self.label = label
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]

                self.bar = tqdm(total=total, desc=label, file=sys.stderr, mininterval=2.0)
            except ImportError:  # pragma: no cover - tqdm comes with transformers
                self.bar = None

    def step(self, note: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(note[:40], refresh=False)
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - self.start
        print(
            f"{self.label} {self.done}/{self.total} {elapsed:.0f} s {note[:40]}", file=sys.stderr, flush=True
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _crop_to(cache: Any, length: int) -> None:
    """Drop the cache's tokens beyond ``length`` (full-attention layers only)."""
    excess = cache.get_seq_length() - length
    if excess < 0:
        raise ValueError(f"cache holds {cache.get_seq_length()} tokens, fewer than length={length}")
    if excess:
        cache.crop(-excess)


def evaluate_window(
    *,
    model: Any,
    ids: Any,
    window: str,
    plan: LongContextPlan,
    configs: Sequence[Any],
    setup: Callable[[Any], None],
    reset: Callable[[], None],
    done: set[tuple[str, int, str]],
    write: Callable[[dict[str, Any]], None],
    step: Callable[[str], None] = lambda note: None,
    row_fields: Mapping[str, Any] | None = None,
) -> None:
    """Run every context of ``plan`` and every config on one window ``ids`` (1-D, >= max context tokens).

    ``configs``: objects with ``.key`` (e.g. :class:`aqua_model.fidelity.decoder.Config`);
    ``setup(config)`` switches the model to it, ``reset()`` back to the unmodified model. Rows
    whose (window, context, config key) is in ``done`` are not written again (the baseline is
    recomputed when any method of its context is missing, since it is their reference).
    """
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if ids.dim() != 1 or ids.numel() < plan.contexts[-1]:
        raise ValueError(
            f"ids of window {window!r} must be 1-D with at least {plan.contexts[-1]} tokens, got {tuple(ids.shape)}"
        )
    extra = dict(row_fields or {})
    reset()
    cache = DynamicCache(config=model.config)
    filled = 0
    prefill_s = 0.0
    with torch.no_grad():
        for context in plan.contexts:
            prefix, end = plan.span(context)
            todo = [c for c in configs if (window, context, c.key) not in done]
            need_base = todo or (window, context, BASELINE) not in done
            t0 = time.perf_counter()
            for start in range(filled, prefix, plan.prefill_chunk_tokens):
                stop = min(prefix, start + plan.prefill_chunk_tokens)
                model(input_ids=ids[start:stop][None], cache=cache, use_cache=True, logits_to_keep=1)
            filled = prefix
            prefill_s += time.perf_counter() - t0
            if any(type(layer) is not DynamicLayer for layer in cache.layers):
                raise TypeError(
                    "the long-context study crops the cache, so every layer must be a full DynamicLayer"
                )
            chunk = ids[prefix:end][None]
            targets = ids[prefix + 1 : end + 1]
            t0 = time.perf_counter()
            base_logits = model(input_ids=chunk, cache=cache, use_cache=True).logits[0]
            base_s = time.perf_counter() - t0
            base_lp = torch.log_softmax(base_logits.float(), dim=-1)
            layers: list[Any] = list(cache.layers)  # full DynamicLayers (checked above)
            saved = [(layer.keys, layer.values) for layer in layers]

            def row(
                config_key: str, sums: dict[str, list[float]], seconds: float, ctx: int = context, **more: Any
            ) -> dict[str, Any]:
                return {
                    "schema_version": SCHEMA_VERSION,
                    **extra,
                    "window": window,
                    "context": ctx,
                    "config": config_key,
                    "scored_tokens": plan.scored_tokens,
                    "block_tokens": plan.block_tokens,
                    **{f"{k}_sum": sum(v) for k, v in sums.items()},
                    **{f"block_{k}": v for k, v in sums.items()},
                    "seconds": round(seconds, 4),
                    **more,
                }

            if need_base and (window, context, BASELINE) not in done:
                sums = block_sums(base_logits, base_lp, targets, block_tokens=plan.block_tokens)
                write(row(BASELINE, sums, base_s, prefill_seconds=round(prefill_s, 4), prefix_tokens=prefix))
            step(f"{window} N={context} {BASELINE}")
            for cfg in todo:
                _crop_to(cache, prefix)
                setup(cfg)
                t0 = time.perf_counter()
                logits = model(input_ids=chunk, cache=cache, use_cache=True).logits[0]
                seconds = time.perf_counter() - t0
                reset()
                write(
                    row(
                        cfg.key, block_sums(logits, base_lp, targets, block_tokens=plan.block_tokens), seconds
                    )
                )
                step(f"{window} N={context} {cfg.key}")
            for layer, (k, v) in zip(layers, saved):  # back to the dense cache through position end - 1
                layer.keys, layer.values = k, v
            filled = end
            for _ in range(len(configs) - len(todo)):
                step(f"{window} N={context} (resumed)")


def pending_windows(
    windows: Iterable[str], *, plan: LongContextPlan, configs: Sequence[Any], done: set[tuple[str, int, str]]
) -> list[str]:
    """The windows with at least one row missing (baseline or config, at any context)."""
    keys = [BASELINE, *(c.key for c in configs)]
    return [w for w in windows if any((w, n, k) not in done for n in plan.contexts for k in keys)]


def done_keys(rows: Iterable[Mapping[str, Any]], **match: Any) -> set[tuple[str, int, str]]:
    """(window, context, config) of the rows whose fields equal ``match`` (e.g. model=..., plan sizes)."""
    return {
        (str(r["window"]), int(r["context"]), str(r["config"]))
        for r in rows
        if all(r.get(k) == v for k, v in match.items())
    }
