"""The case grid: which (phase, plan, shape, k, dtype) the runner measures.

A case is one plan at one shape. Its id is a readable, stable string, so a rerun can skip
the ids already in a results file. Cases whose tensors would not fit the device's budget are
kept in the grid and marked ``skip_reason`` up front, so the results file records them as
``skipped`` instead of dropping them silently.

Two grids: :func:`gpu_grid` (H200-sized, >= 150 measured cases that fit one 10-minute
command) and :func:`cpu_grid` (tiny shapes that run in seconds on a CI CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, cast

from aqua_model._checks import check_choice, check_int
from aqua_model.costs import memory
from aqua_model.costs.dtypes import dtype_bytes
from aqua_model.costs.flops import PHASES
from aqua_model.costs.numeric import evaluate
from aqua_model.costs.sizes import check_context, check_kept_dims
from aqua_model.plans import build_plan, plan_names

#: Plans the runner can execute per phase: those with an implementation (the others are model-only).
RUNNABLE_PLANS: dict[str, tuple[str, ...]] = {
    phase: tuple(p for p in plan_names(phase) if not build_plan(p, phase=phase).model_only)
    for phase in PHASES
}
#: The dense baseline every AQUA plan's speedup is taken against.
BASELINE_PLAN = "dense-fused"
#: Head dimension of every GPU case (Llama/Mistral-style heads).
HEAD_DIM = 128
#: Query heads of every GPU case (Llama-3-8B-like layer).
HEADS_Q = 32
#: KV-head counts: MHA (g = 1), and GQA with g = 4 and g = 8.
HEADS_KV_CHOICES: tuple[int, ...] = (32, 8, 4)
#: Kept dimensions swept on the main shapes (the brief's full set).
K_ALL: tuple[int, ...] = (16, 32, 64, 96, 112, 128)
#: Kept dimensions on every other shape: an aggressive and a mild setting.
K_MAIN: tuple[int, ...] = (32, 96)
#: Decode contexts (512 .. 128K).
DECODE_CONTEXTS: tuple[int, ...] = (512, 2048, 8192, 32768, 131072)
#: Decode batch sizes, in the order the grid visits them (the k-sweep batch first).
DECODE_BATCHES_ORDER: tuple[int, ...] = (8, 1, 64)
#: Prefill prompt lengths (new tokens T, no cached prefix) and batches.
PREFILL_PROMPTS: tuple[int, ...] = (512, 2048, 8192)
PREFILL_BATCHES: tuple[int, ...] = (1, 4)
#: Device-memory budget of one case's tensors on the H200 (141 GB, leaving room for the
#: allocator, the timer's 256 MB flush buffer and the reference check).
GPU_CASE_BYTES_LIMIT = 80e9
#: Budget of the KV cache of one decode shape (keeps each case's timing calls short too).
GPU_KV_BYTES_LIMIT = 20e9


@dataclass(frozen=True)
class Case:
    """One measurement: a plan at one shape. ``context`` is the cached tokens N; ``prompt``
    the new tokens T of a prefill (None in decode); ``k`` is d for dense plans."""

    phase: str
    plan: str
    context: int
    batch: int
    heads_q: int
    heads_kv: int
    d: int
    k: int
    dtype: str = "bf16"
    prompt: int | None = None
    selection: str = "group"
    skip_reason: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_choice("phase", self.phase, PHASES)
        check_choice("plan", self.plan, RUNNABLE_PLANS[self.phase])
        check_context(
            self.phase,
            check_int("context", self.context, minimum=0),
            None if self.prompt is None else check_int("prompt", self.prompt, minimum=1),
        )
        check_int("batch", self.batch, minimum=1)
        check_int("heads_kv", self.heads_kv, minimum=1)
        check_int("heads_q", self.heads_q, minimum=self.heads_kv)
        if self.heads_q % self.heads_kv:
            raise ValueError(
                f"heads_q must be a multiple of heads_kv, got heads_q={self.heads_q}, heads_kv={self.heads_kv}"
            )
        check_int("d", self.d, minimum=1)
        check_kept_dims(check_int("k", self.k, minimum=1), self.d)
        dtype_bytes(self.dtype)

    @property
    def g(self) -> int:
        """Query heads per KV head."""
        return self.heads_q // self.heads_kv

    @property
    def keys(self) -> int:
        """Keys each query attends over at the end of the step (N, or N + T in prefill)."""
        return self.context + (self.prompt or 0)

    @property
    def queries(self) -> int:
        """New queries per sequence (1 in decode, T in prefill)."""
        return 1 if self.phase == "decode" else int(cast(int, self.prompt))

    @property
    def case_id(self) -> str:
        """Stable readable id, unique per case."""
        t = f"-T{self.prompt}" if self.prompt is not None else ""
        return (
            f"{self.phase}/{self.plan}/N{self.context}{t}/B{self.batch}/hq{self.heads_q}-hkv{self.heads_kv}"
            f"/d{self.d}/k{self.k}/{self.dtype}/{self.selection}"
        )

    @property
    def shape_key(self) -> tuple[Any, ...]:
        """What a speedup ratio pairs on: everything but the plan and k."""
        return (
            self.phase,
            self.context,
            self.prompt,
            self.batch,
            self.heads_q,
            self.heads_kv,
            self.d,
            self.dtype,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the fields every result row starts with)."""
        out = asdict(self)
        out.pop("skip_reason")
        return {"case_id": self.case_id, **out}


#: The fields a result or case row carries to rebuild a :class:`Case` (its constructor arguments, less
#: the skip reason), derived from the dataclass so that a new field cannot be forgotten in one reader.
CASE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Case) if f.name != "skip_reason")


def kv_bytes(case: Case) -> int:
    """Bytes of the dense K and V tensors of the case (whole batch, one layer)."""
    per_head = evaluate(
        memory.kv_cache_bytes("dense"), {"N": case.keys, "d": case.d, "s": dtype_bytes(case.dtype)}
    )
    return int(per_head) * case.batch * case.heads_kv


def working_set_bytes(case: Case) -> int:
    """Upper estimate of the device bytes a case allocates (inputs, intermediates, outputs)."""
    s = dtype_bytes(case.dtype)
    total = kv_bytes(case)
    if case.plan.startswith("aqua"):
        total += kv_bytes(case) // 2  # a second copy of the keys (rotated, in the plan's layout)
    if case.plan == "aqua-cache-step":
        total += kv_bytes(case)  # the paged cache's own copy of K^ and V
    score_elems = case.batch * case.heads_q * case.queries * case.keys
    if case.plan.endswith("eager"):
        total += 3 * score_elems * s  # scores, probabilities and a softmax temporary
    if case.plan == "aqua-eager":
        if case.phase == "decode":
            total += case.batch * case.heads_q * case.k * case.context * s  # the gathered copy
        else:
            total += 2 * case.batch * case.heads_q * case.queries * case.d * s  # masked q^
    return total


def _skip(case: Case, *, case_limit: float, kv_limit: float) -> Case:
    reasons = []
    if kv_bytes(case) > kv_limit:
        reasons.append(f"KV cache {kv_bytes(case) / 1e9:.1f} GB > budget {kv_limit / 1e9:.0f} GB")
    if working_set_bytes(case) > case_limit:
        reasons.append(
            f"working set {working_set_bytes(case) / 1e9:.1f} GB > budget {case_limit / 1e9:.0f} GB"
        )
    if not reasons:
        return case
    return Case(**{**asdict(case), "skip_reason": "; ".join(reasons)})


def _decode_shape_cases(
    context: int,
    batch: int,
    heads_q: int,
    heads_kv: int,
    d: int,
    ks: tuple[int, ...],
    eager_ks: tuple[int, ...],
    token_major_ks: tuple[int, ...],
) -> list[Case]:
    common: dict[str, Any] = dict(
        phase="decode", context=context, batch=batch, heads_q=heads_q, heads_kv=heads_kv, d=d
    )
    out = [Case(plan="dense-fused", k=d, **common), Case(plan="dense-eager", k=d, **common)]
    out += [Case(plan="aqua-fused", k=k, **common) for k in ks]
    out += [Case(plan="aqua-eager", k=k, **common) for k in eager_ks]
    out += [Case(plan="aqua-step-topk", k=k, **common) for k in eager_ks]
    out += [Case(plan="aqua-token-major", k=k, **common) for k in token_major_ks]
    return out


def _is_sweep_shape(context: int, batch: int, heads_kv: int) -> bool:
    """Shapes that get the full k sweep: batch 8 at every context, for every head layout."""
    return batch == 8


def _prefill_cases() -> list[Case]:
    cases: list[Case] = []
    for heads_kv in HEADS_KV_CHOICES:
        for prompt in PREFILL_PROMPTS:
            for batch in PREFILL_BATCHES:
                common: dict[str, Any] = dict(
                    phase="prefill",
                    context=0,
                    prompt=prompt,
                    batch=batch,
                    heads_q=HEADS_Q,
                    heads_kv=heads_kv,
                    d=HEAD_DIM,
                )
                cases += [
                    Case(plan="dense-fused", k=HEAD_DIM, **common),
                    Case(plan="dense-eager", k=HEAD_DIM, **common),
                ]
                cases += [Case(plan="aqua-eager", k=k, **common) for k in K_MAIN]
    return cases


def gpu_grid(*, case_limit: float = GPU_CASE_BYTES_LIMIT, kv_limit: float = GPU_KV_BYTES_LIMIT) -> list[Case]:
    """The H200 grid: decode (512..128K, batch 1..64, MHA and GQA g = 4, 8, k sweep) and prefill."""
    cases: list[Case] = []
    # Order: the k-sweep shapes (batch 8) first, then prefill, then batches 1 and 64, so that a
    # run cut short by its deadline still covers every context, head layout and phase.
    for batch in DECODE_BATCHES_ORDER:
        for heads_kv in HEADS_KV_CHOICES:
            for context in DECODE_CONTEXTS:
                ks = K_ALL if _is_sweep_shape(context, batch, heads_kv) else K_MAIN
                cases += _decode_shape_cases(context, batch, HEADS_Q, heads_kv, HEAD_DIM, ks, (96,), (32, 96))
        if batch == DECODE_BATCHES_ORDER[0]:
            cases += _prefill_cases()
    return [_skip(c, case_limit=case_limit, kv_limit=kv_limit) for c in cases]


#: CPU grid: tiny shapes that still exercise MHA and GQA, both phases and every plan.
CPU_HEAD_DIM = 32
CPU_HEADS_Q = 4
CPU_CONTEXTS: tuple[int, ...] = (64, 256)
CPU_KS: tuple[int, ...] = (8, 24)
#: Working-set budget of one CPU case (keeps CI memory small).
CPU_CASE_BYTES_LIMIT = 256e6


def cpu_grid() -> list[Case]:
    """A small grid (tens of cases, seconds on one CPU core) with the GPU grid's structure."""
    cases: list[Case] = []
    for heads_kv in (4, 1):
        for context in CPU_CONTEXTS:
            cases += _decode_shape_cases(
                context, 2, CPU_HEADS_Q, heads_kv, CPU_HEAD_DIM, CPU_KS, CPU_KS[:1], CPU_KS[:1]
            )
        common: dict[str, Any] = dict(
            phase="prefill",
            context=0,
            prompt=64,
            batch=1,
            heads_q=CPU_HEADS_Q,
            heads_kv=heads_kv,
            d=CPU_HEAD_DIM,
        )
        cases += [
            Case(plan="dense-fused", k=CPU_HEAD_DIM, **common),
            Case(plan="dense-eager", k=CPU_HEAD_DIM, **common),
        ]
        cases += [Case(plan="aqua-eager", k=k, **common) for k in CPU_KS]
    return [_skip(c, case_limit=CPU_CASE_BYTES_LIMIT, kv_limit=CPU_CASE_BYTES_LIMIT) for c in cases]


#: The reduced in-sample grid (issue 12): shapes of the grid above, every runnable plan, the plans
#: the held-out targets name first (so that a deadline cuts the others).
REDUCED_CONTEXTS: tuple[int, ...] = (512, 8192, 131072)
REDUCED_EXTRA: tuple[tuple[int, int, int], ...] = ((1, 8, 2048), (1, 8, 32768), (64, 8, 2048), (64, 8, 32768))


def reduced_grid(
    *, case_limit: float = GPU_CASE_BYTES_LIMIT, kv_limit: float = GPU_KV_BYTES_LIMIT
) -> list[Case]:
    """The in-sample grid of a held-out call: batch 8 at N in ``REDUCED_CONTEXTS`` for MHA and
    GQA g = 4, 8 (dense-fused; aqua-fused at k = 32 and 96, and per head at k = 32 under GQA;
    then the decode step, the cache step, the eager plans and the token-major plans at one k each),
    the fused pair at batch 1 and 64 (``REDUCED_EXTRA``), and prefill at T = 512, 2048, 8192
    (batch 1; MHA and g = 4): SDPA, then the eager plans."""
    first: list[Case] = []
    rest: list[Case] = []
    for context in REDUCED_CONTEXTS:
        for heads_kv in HEADS_KV_CHOICES:
            common: dict[str, Any] = dict(
                phase="decode", context=context, batch=8, heads_q=HEADS_Q, heads_kv=heads_kv, d=HEAD_DIM
            )
            first += [
                Case(plan="dense-fused", k=HEAD_DIM, **common),
                Case(plan="aqua-fused", k=32, **common),
                Case(plan="aqua-fused", k=96, **common),
            ]
            if heads_kv != HEADS_Q:
                first.append(Case(plan="aqua-fused", k=32, selection="per-head", **common))
            rest += [
                Case(plan="aqua-step-topk", k=32, **common),
                Case(plan="aqua-cache-step", k=96, **common),
                Case(plan="aqua-token-major", k=32, **common),
                Case(plan="aqua-step-topk-token-major", k=96, **common),
            ]
            if context <= 32768:
                rest += [
                    Case(plan="dense-eager", k=HEAD_DIM, **common),
                    Case(plan="aqua-eager", k=96, **common),
                ]
    for batch, heads_kv, context in REDUCED_EXTRA:
        common = dict(
            phase="decode", context=context, batch=batch, heads_q=HEADS_Q, heads_kv=heads_kv, d=HEAD_DIM
        )
        first += [
            Case(plan="dense-fused", k=HEAD_DIM, **common),
            Case(plan="aqua-fused", k=32, **common),
            Case(plan="aqua-fused", k=96, **common),
        ]
    for heads_kv in HEADS_KV_CHOICES[:2]:
        for prompt in PREFILL_PROMPTS:
            common = dict(
                phase="prefill",
                context=0,
                prompt=prompt,
                batch=1,
                heads_q=HEADS_Q,
                heads_kv=heads_kv,
                d=HEAD_DIM,
            )
            first.append(Case(plan="dense-fused", k=HEAD_DIM, **common))
            rest += [Case(plan="dense-eager", k=HEAD_DIM, **common), Case(plan="aqua-eager", k=32, **common)]
    return [_skip(c, case_limit=case_limit, kv_limit=kv_limit) for c in first + rest]


def grid(name: str) -> list[Case]:
    """A grid by name: "gpu", "reduced" (the in-sample grid of a held-out call) or "cpu"."""
    check_choice("grid", name, ("gpu", "reduced", "cpu"))
    return {"gpu": gpu_grid, "reduced": reduced_grid, "cpu": cpu_grid}[name]()
