"""Held-out validation cases drawn from a documented distribution, and the frozen-model record.

``aqua-model validate sample --seed S --n N --out cases.jsonl`` draws shapes from
:data:`DISTRIBUTION` with ``random.Random(S)`` until at least N cases are written. Each shape:

* phase: prefill with probability ``P_PREFILL``, else decode;
* batch B: log-uniform on [1, 64] (floor of exp(U(ln 1, ln 65)));
* context (decode: N cached keys; prefill: T new tokens, no cached prefix): log-uniform on
  [256, 262144] (floor of exp(U(ln 256, ln 262145))), never rounded; an exact power of two is
  redrawn, so no held-out context equals a calibration context (every calibration shape of
  :mod:`aqua_model.validate.streams` and :mod:`aqua_model.validate.microbench` is a power of two);
* H_q uniform over ``HEADS_Q`` (8 to 64, with 12, 20, 28, 40, 56); g uniform over the divisors
  of H_q up to 8, H_kv = H_q / g;
* d uniform over {64, 128}; k uniform on the integers 8..d; selection uniform over
  {group, per-head}; dtype uniform over {bf16, fp16}.

Each shape is measured by its core plans (decode: ``dense-fused`` and ``aqua-fused``; prefill:
``dense-fused``) and by one more plan drawn uniformly from ``OTHER_PLANS[phase]`` (eager AQUA
implements group selection only, so it takes the case with group selection). A shape whose core
plans exceed the device budget (dense KV cache over ``MAX_KV_BYTES``, or a datasheet-predicted
call over ``MAX_CALL_S``) is redrawn, and the redraws are counted by reason in the file's meta
line: the sample is the distribution truncated by the budget, and says so. An extra plan over
its own budget is left out (counted), the shape kept.

The first line of the file is a meta record: seed, N, the distribution, the redraws, and the
model the cases were drawn for (the git commit the model is frozen at and a SHA-256 fingerprint
of the package's source and data, :func:`model_fingerprint`). ``validate run --cases`` refuses a
case file whose fingerprint differs from the running package's, and writes the commit and the
fingerprint into every row.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import random
import subprocess
from pathlib import Path
from typing import Any

from aqua_model._checks import check_choice, check_int
from aqua_model.validate.cases import CASE_FIELDS, Case, kv_bytes, working_set_bytes

#: Version of the case-file format.
CASES_SCHEMA_VERSION = 1
#: The distribution (see the module docstring); written into every case file.
P_PREFILL = 0.25
BATCH_RANGE = (1, 64)
CONTEXT_RANGE = (256, 262144)
HEADS_Q: tuple[int, ...] = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64)
MAX_GROUP = 8
HEAD_DIMS: tuple[int, ...] = (64, 128)
MIN_K = 8
SELECTIONS: tuple[str, ...] = ("group", "per-head")
DTYPES: tuple[str, ...] = ("bf16", "fp16")
CORE_PLANS: dict[str, tuple[str, ...]] = {
    "decode": ("dense-fused", "aqua-fused"),
    "prefill": ("dense-fused",),
}
OTHER_PLANS: dict[str, tuple[str, ...]] = {
    "decode": (
        "aqua-step-topk",
        "aqua-cache-step",
        "aqua-token-major",
        "aqua-step-topk-token-major",
        "dense-eager",
        "aqua-eager",
    ),
    "prefill": ("dense-eager", "aqua-eager"),
}
#: Plans whose implementation selects per KV group only.
GROUP_ONLY_PLANS: tuple[str, ...] = ("aqua-eager",)
#: The three samples of the protocol (validation/README.md): the training sample fits the kernel-time
#: forms, the calibration sample sets the split-conformal intervals, the test sample judges the model.
SAMPLE_ROLES: tuple[str, ...] = ("train", "calibration", "test")
#: Train and calibration seeds are the test seed (the frozen commit's) plus these offsets, so that
#: nobody picks them and the three samples are distinct draws of the one sampler.
ROLE_SEED_OFFSETS: dict[str, int] = {"train": 1, "calibration": 2, "test": 0}
#: Device budget of one case (an H200: 141 GB; one case's tensors, and one timed call).
MAX_KV_BYTES = 16 * 2**30
MAX_WORKING_SET_BYTES = 48e9
MAX_CALL_S = 0.03
DISTRIBUTION: dict[str, Any] = {
    "p_prefill": P_PREFILL,
    "batch": f"log-uniform integer on {list(BATCH_RANGE)}",
    "context": f"log-uniform integer on {list(CONTEXT_RANGE)} (decode N; prefill T, no cached prefix); powers of two redrawn",
    "heads_q": list(HEADS_Q),
    "g": f"uniform over the divisors of H_q up to {MAX_GROUP}",
    "d": list(HEAD_DIMS),
    "k": f"uniform integer on [{MIN_K}, d]",
    "selection": list(SELECTIONS),
    "dtype": list(DTYPES),
    "core_plans": CORE_PLANS,
    "other_plans": OTHER_PLANS,
    "budget": {
        "max_kv_bytes": MAX_KV_BYTES,
        "max_working_set_bytes": MAX_WORKING_SET_BYTES,
        "max_datasheet_call_s": MAX_CALL_S,
    },
}
#: The CPU form of the distribution (the CI test of the pipeline): the same structure, tiny ranges.
CPU_DISTRIBUTION: dict[str, Any] = {
    "batch_range": (1, 3),
    "context_range": (16, 300),
    "heads_q": (4, 6, 8),
    "max_group": 4,
    "head_dims": (32,),
    "min_k": 4,
    "max_kv_bytes": 4 * 2**20,
    "max_working_set_bytes": 64e6,
    "max_call_s": None,
}
#: The H200 form, as the module constants above.
H200_DISTRIBUTION: dict[str, Any] = {
    "batch_range": BATCH_RANGE,
    "context_range": CONTEXT_RANGE,
    "heads_q": HEADS_Q,
    "max_group": MAX_GROUP,
    "head_dims": HEAD_DIMS,
    "min_k": MIN_K,
    "max_kv_bytes": MAX_KV_BYTES,
    "max_working_set_bytes": MAX_WORKING_SET_BYTES,
    "max_call_s": MAX_CALL_S,
}
SCALES: dict[str, dict[str, Any]] = {"h200": H200_DISTRIBUTION, "cpu": CPU_DISTRIBUTION}
#: Files whose content makes up the model's fingerprint (package source and data).
FINGERPRINT_SUFFIXES = (".py", ".toml", ".txt")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def model_fingerprint(root: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 over the package's source and data files (relative path and bytes, sorted)."""
    base = Path(root) if root is not None else PACKAGE_DIR
    h = hashlib.sha256()
    for path in sorted(
        p
        for p in base.rglob("*")
        if p.is_file()
        and p.suffix in FINGERPRINT_SUFFIXES
        and "__pycache__" not in p.parts
        and "_results" not in p.parts
    ):
        h.update(str(path.relative_to(base)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def git_commit(repo: str | os.PathLike[str] | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether aqua_model/ differs from it) of the checkout, or (None, None)."""
    cwd = Path(repo) if repo is not None else PACKAGE_DIR.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "aqua_model"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip(), bool(dirty.stdout.strip())


def seed_from_commit(commit: str) -> int:
    """The held-out seed rule of validation/README.md: the integer value of the commit's first 8 hex digits."""
    if (
        not isinstance(commit, str)
        or len(commit) < 8
        or any(c not in "0123456789abcdefABCDEF" for c in commit[:8])
    ):
        raise ValueError(f"commit must be a hex commit hash of at least 8 digits, got {commit!r}")
    return int(commit[:8], 16)


def _log_uniform_int(rng: random.Random, lo: int, hi: int) -> int:
    return min(hi, int(math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))))


def _predicted_call_s(case: Case) -> float:
    from aqua_model.simulator import predict

    return predict(
        plan=case.plan,
        phase=case.phase,
        context=case.context,
        batch=case.batch,
        heads_q=case.heads_q,
        heads_kv=case.heads_kv,
        d=case.d,
        k=case.k,
        dtype=case.dtype,
        prompt=case.prompt,
        selection=case.selection,
        gpu="h200",
    ).total_s


def _over_budget(case: Case, dist: dict[str, Any]) -> str | None:
    if kv_bytes(case) > dist["max_kv_bytes"]:
        return "kv_bytes"
    if working_set_bytes(case) > dist["max_working_set_bytes"]:
        return "working_set"
    if dist["max_call_s"] is not None and _predicted_call_s(case) > dist["max_call_s"]:
        return "call_time"
    return None


def _case(phase: str, plan: str, shape: dict[str, Any]) -> Case:
    dense = plan.startswith("dense")
    selection = "group" if (dense or plan in GROUP_ONLY_PLANS) else shape["selection"]
    ctx = shape["context"]
    return Case(
        phase=phase,
        plan=plan,
        context=ctx if phase == "decode" else 0,
        prompt=None if phase == "decode" else ctx,
        batch=shape["batch"],
        heads_q=shape["heads_q"],
        heads_kv=shape["heads_kv"],
        d=shape["d"],
        k=shape["d"] if dense else shape["k"],
        dtype=shape["dtype"],
        selection=selection,
    )


def draw_shape(rng: random.Random, dist: dict[str, Any] = H200_DISTRIBUTION) -> tuple[str, dict[str, Any]]:
    """One (phase, shape) of the distribution (before the budget)."""
    phase = "prefill" if rng.random() < P_PREFILL else "decode"
    batch = _log_uniform_int(rng, *dist["batch_range"])
    context = _log_uniform_int(rng, *dist["context_range"])
    hq = rng.choice(dist["heads_q"])
    g = rng.choice([x for x in range(1, dist["max_group"] + 1) if hq % x == 0])
    d = rng.choice(dist["head_dims"])
    shape = {
        "batch": batch,
        "context": context,
        "heads_q": hq,
        "heads_kv": hq // g,
        "d": d,
        "k": rng.randint(dist["min_k"], d),
        "selection": rng.choice(SELECTIONS),
        "dtype": rng.choice(DTYPES),
    }
    return phase, shape


def sample_cases(
    *, seed: int, n: int, scale: str = "h200", core_only: bool = False
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """At least ``n`` held-out cases (as rows: the case, its shape index and role) and the redraw
    counts by reason; ``scale`` "h200" (the distribution of the module docstring) or "cpu" (its
    tiny form, :data:`CPU_DISTRIBUTION`); ``core_only`` leaves out the extra plan (the draws are the
    same: the extra plan is still drawn, then dropped)."""
    if not isinstance(core_only, bool):
        raise TypeError(f"core_only must be True or False, got {core_only!r}")
    check_int("seed", seed, minimum=0)
    check_int("n", n, minimum=1)
    dist = SCALES[check_choice("scale", scale, tuple(SCALES))]
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    redraws: dict[str, int] = {
        "power_of_two": 0,
        "kv_bytes": 0,
        "working_set": 0,
        "call_time": 0,
        "extra_plan_over_budget": 0,
    }
    shape_index = 0
    while len(rows) < n:
        phase, shape = draw_shape(rng, dist)
        other = rng.choice(OTHER_PLANS[phase])
        if shape["context"] & (shape["context"] - 1) == 0:
            redraws["power_of_two"] += 1
            continue
        core = [_case(phase, plan, shape) for plan in CORE_PLANS[phase]]
        reason = next((r for r in (_over_budget(c, dist) for c in core) if r), None)
        if reason:
            redraws[reason] += 1
            continue
        extra = _case(phase, other, shape)
        cases = [(c, "core") for c in core]
        if core_only:
            pass
        elif _over_budget(extra, dist):
            redraws["extra_plan_over_budget"] += 1
        else:
            cases.append((extra, "extra"))
        for c, role in cases:
            rows.append({"kind": "case", "shape_index": shape_index, "role": role, **c.to_dict()})
        shape_index += 1
    return rows, redraws


def write_cases(
    *,
    seed: int,
    n: int,
    out_path: str | os.PathLike[str],
    model_commit: str | None = None,
    scale: str = "h200",
    role: str = "test",
    core_only: bool = False,
) -> dict[str, Any]:
    """Draw the cases and write the case file (meta line first); returns the meta record. ``role``
    (:data:`SAMPLE_ROLES`) says which of the protocol's three samples the file is."""
    check_choice("role", role, SAMPLE_ROLES)
    rows, redraws = sample_cases(seed=seed, n=n, scale=scale, core_only=core_only)
    commit, dirty = git_commit()
    meta = {
        "kind": "meta",
        "schema_version": CASES_SCHEMA_VERSION,
        "seed": seed,
        "role": role,
        "core_only": core_only,
        "n": n,
        "cases": len(rows),
        "shapes": 1 + max(r["shape_index"] for r in rows),
        "scale": scale,
        "distribution": DISTRIBUTION if scale == "h200" else {**DISTRIBUTION, **CPU_DISTRIBUTION},
        "redraws": redraws,
        "model_commit": model_commit or commit,
        "checkout_commit": commit,
        "model_dirty": dirty,
        "model_sha256": model_fingerprint(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fh.write(json.dumps(meta) + "\n")
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return meta


def read_cases(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Case]]:
    """(meta record, cases) of a case file written by :func:`write_cases`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"case file {str(p)!r} does not exist")
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"case file {str(p)!r} is empty")
    try:
        meta = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}:1: not valid JSON ({exc.msg})") from None
    if (
        not isinstance(meta, dict)
        or meta.get("kind") != "meta"
        or meta.get("schema_version") != CASES_SCHEMA_VERSION
    ):
        raise ValueError(
            f"{p}:1: the first line must be the meta record of a case file (kind 'meta', schema_version "
            f"{CASES_SCHEMA_VERSION}); write one with 'aqua-model validate sample'"
        )
    cases = []
    for i, line in enumerate(lines[1:], start=2):
        try:
            row = json.loads(line)
            cases.append(Case(**{k: row[k] for k in CASE_FIELDS}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{p}:{i}: not a case ({type(exc).__name__}: {exc})") from None
    return meta, cases


def check_frozen(meta: dict[str, Any]) -> None:
    """Raise unless the running package is the model the cases were drawn for (same fingerprint)."""
    want, have = meta.get("model_sha256"), model_fingerprint()
    if want != have:
        raise ValueError(
            f"the model changed since the cases were drawn (fingerprint {str(want)[:12]} in the case file, "
            f"{have[:12]} here, frozen at commit {meta.get('model_commit')}): a held-out run measures the "
            "frozen model only; draw a fresh seed for a changed model (validation/README.md)"
        )


__all__ = [
    "CASES_SCHEMA_VERSION",
    "DISTRIBUTION",
    "check_frozen",
    "draw_shape",
    "git_commit",
    "model_fingerprint",
    "read_cases",
    "sample_cases",
    "seed_from_commit",
    "write_cases",
]
