"""Dense and AQUA plans: the kernels an implementation launches, each with symbolic FLOPs and
bytes taken from the cost model, an access pattern, a launch count and the implementation it
describes (:class:`~aqua_model.plans.kernel.Implementation`, or "model-only").

All expressions are for ONE layer, over the batch and all heads (symbols B, H_q, H_kv,
g = H_q/H_kv, N, T, d, k, s). FLOPs come from :mod:`aqua_model.costs.flops` and the K/V
bytes from :mod:`aqua_model.costs.memory`; the few extra tensors a kernel reads or writes
(q, outputs, materialised scores, indices) are counted here, each named.

Decode plans (one new token per sequence against N cached keys):

* ``dense-fused``       torch SDPA: one FlashAttention-style kernel reading K and V once.
* ``dense-eager``       scores, softmax, value as three kernels; scores materialised.
* ``aqua-eager``        q_proj, k_proj, topk, gather (a materialised copy of the selected
                        key dims per query head), scores, softmax, value.
* ``aqua-fused``        the package's default call ``aqua_decode(q_hat, k_hat_t, v, k_keep=k,
                        selection=...)``: q arrives rotated (P = None), keys are cached rotated
                        and dim-major; ONE Triton launch: each split program selects its group's
                        kept rows from q^, streams those rows of K^T [d, N] once per KV group and
                        all of V, and the last split of each (batch, KV head) merges the partials.
                        Rotating q and the new key is NOT counted (folded into W_Q / W_K, exact
                        only without RoPE, or done by the caller): see ``aqua-step-topk``.
* ``aqua-fused-exact``  the same call over a contiguous exactly-N K^T [d, N] (row stride N, not
                        a capacity rounded up to 16): when N % 16 != 0 every key load is scalar
                        (the misaligned flag of the kernel's form); not in the fitted sample.
* ``aqua-fused-3launch`` ``aqua_decode(..., launches=3)``: the three-launch path (a Triton
                        selection prologue writing the union of the group's kept rows with each
                        head's q^ on them, the split-N pass, the log-sum-exp combine).
* ``aqua-token-major``  the same call over a transposed view of a token-major K^ [N, d]:
                        each kept channel costs whole memory sectors.
* ``aqua-step-topk``    a decode step around the fused kernel, as the validation suite
                        measured it until issue 11 (then called ``aqua-fused``): rotate q and
                        the new key (torch.bmm), select with torch.topk (abs, group sum, topk),
                        then the three-launch path with those indices (given indices do not
                        take the one-launch kernel: ``split_rule.GIVEN_LAUNCHES``).
* ``aqua-step-topk-token-major``  the same step over a token-major K^ (then ``aqua-token-major``).
* ``aqua-cache-step``   a whole decode step of ``AquaKVCache`` (``kv_cache.decode_step``) in one
                        Triton launch: each split program rotates q by P and selects; the program
                        whose chunk holds the new position also rotates the new key and writes k^
                        (dim-major pages) and v into the cache before streaming its chunk.

Launches are what the implementations launch (``tests/test_launch_counts.py`` checks them with
torch.profiler on a GPU): torch SDPA's decode is cuDNN's flash kernel and its split-KV
reduction (``attention`` and ``reduce``); the eager torch selection ``topk`` is |q^| (abs), the
sum over the group's heads and torch.topk, itself two kernels (gatherTopK, bitonicSortKVInPlace);
the eager gather is two (the kept key rows, then q^'s kept dims); the step's selection inside
``aqua_decode(select_in="torch")`` adds a float copy and an int32 copy of the indices (6 with
group selection, 5 per head), then the Triton prologue takes the given indices; the eager AQUA
prefill's selection also fills and scatters a 0/1 keep mask (6) and its scores multiply q^ by
that mask before the matmul (2). The Triton decode is one kernel (``attention``:
``_fused_kernel``); its three-launch path is the prologue (``select``), the split pass
(``attention``) and the log-sum-exp combine (``combine``). A
calibrated profile replaces the roofline of torch.topk by its measured time for its rows and
length, and may hold micro-benchmarked device times of the implementations' own kernels
(``Kernel.stream``).

Prefill plans (T new tokens after N cached keys, causal): ``dense-fused`` (visible pairs
only), ``dense-eager`` (the full rectangle, then a mask pass over it), ``aqua-eager`` (per-query
selection by masking q^: the matmul still spans all d dims, so no FLOP saving), and
``aqua-fused`` (an ideal fused kernel doing 2k FLOPs per visible pair; model-only).

Validation results written before issue 11 (row schema 1) name plans by their old names;
:data:`LEGACY_PLAN_NAMES` is the one table that maps them to the plans they measured.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from .._checks import check_choice
from ..costs import memory
from ..costs.alignment import aligned_capacity
from ..costs.convention import Convention, resolve
from ..costs.flops import PHASES, flop_terms
from ..costs.memory import GQA_SELECTIONS
from ..costs.symbols import B, H_kv, H_q, N, T, d, k, s
from . import prefill_fused
from .kernel import INDEX_BYTES, Implementation, Kernel, Plan

DECODE_PLANS = (
    "dense-fused",
    "dense-eager",
    "aqua-eager",
    "aqua-fused",
    "aqua-token-major",
    "aqua-step-topk",
    "aqua-step-topk-token-major",
    "aqua-cache-step",
    "aqua-fused-3launch",
    "aqua-fused-exact",
)
PREFILL_PLANS = ("dense-fused", "dense-eager", "aqua-eager", "aqua-fused", *prefill_fused.PLANS)
#: Decode plan names of validation rows written before issue 11 (row schema 1), mapped to the
#: plan those rows measured. Until then "aqua-fused" named the path the validation suite
#: timed (q and the new key rotated by torch.bmm, torch.topk, then the fused kernel); that path
#: is now "aqua-step-topk", and "aqua-fused" is the package's default ``aqua_decode`` call.
LEGACY_PLAN_NAMES: dict[str, str] = {
    "aqua-fused": "aqua-step-topk",
    "aqua-token-major": "aqua-step-topk-token-major",
}
#: Bytes of one index as the Triton selection pre-pass writes it (int32).
INDEX32_BYTES = 4
#: CUDA kernel names of the Triton decode passes (aqua_model.kernels.triton_decode.KERNELS).
TRITON_PROLOGUE, TRITON_SPLIT, TRITON_COMBINE = r"_prologue_kernel", r"_split_kernel", r"_combine_kernel"
#: CUDA kernel name of the one-launch Triton decode (triton_decode.FUSED_KERNELS), the default.
TRITON_FUSED = r"_fused_kernel"
#: Launches of one torch.topk call over rows of d (gatherTopK, then bitonicSortKVInPlace).
TORCH_TOPK_LAUNCHES = 2
#: Launches of the eager selection: |q^| (abs), the sum over the group's heads, torch.topk.
TOPK_LAUNCHES = 2 + TORCH_TOPK_LAUNCHES
#: Launches of the selection ``aqua_decode(select_in="torch")`` runs before its prologue: abs, a
#: float copy, the group sum (group selection only), torch.topk, an int32 copy of the indices.
STEP_TOPK_LAUNCHES = {"group": 4 + TORCH_TOPK_LAUNCHES, "per-head": 3 + TORCH_TOPK_LAUNCHES}
#: Launches of the eager AQUA prefill's selection: abs, group sum, torch.topk, the zero fill and
#: the scatter of its 0/1 keep mask.
PREFILL_TOPK_LAUNCHES = TOPK_LAUNCHES + 2
#: Launches of the split-N fused decode: the split pass and the log-sum-exp combine (each a kernel
#: of its own in the plans, ``attention`` and ``combine``).
SPLIT_N_LAUNCHES = 2
#: Launches of the one-launch Triton decode (selection, split-N pass and merge in one kernel).
ONE_LAUNCH = 1

# -- tensor sizes used by several kernels (elements x bytes per element) --------------------
Q_HEADS = B * H_q  # query heads over the batch
KV_HEADS = B * H_kv  # KV heads over the batch


def _queries(phase: str) -> sp.Expr:
    return sp.Integer(1) if phase == "decode" else T


def _keys(phase: str) -> sp.Expr:
    return N if phase == "decode" else N + T


def vectors_bytes(phase: str) -> sp.Expr:
    """One d-vector per query head and query (q, q^ or the output)."""
    return Q_HEADS * _queries(phase) * d * s


def _projection_bytes() -> sp.Expr:
    """P, one d x d matrix per KV head of the layer (shared over the batch)."""
    return H_kv * d * d * s


def per_query_heads(terms: dict[str, sp.Expr], *names: str) -> sp.Expr:
    return Q_HEADS * sp.Add(*(terms[n] for n in names))


def aqua_prologue(
    phase: str,
    terms: dict[str, sp.Expr],
    *,
    topk_launches: int = TOPK_LAUNCHES,
    topk_extra_bytes: sp.Expr = sp.Integer(0),
    selection: str = "group",
) -> list[Kernel]:
    """q_proj, k_proj and topk, shared by every AQUA plan (``topk_launches``: what the plan's
    selection launches; ``topk_extra_bytes``: bytes it moves beyond |q^| and the indices;
    torch.topk runs over one row per KV group under group selection, per query head otherwise)."""
    new_keys = KV_HEADS * _queries(phase)
    topk_rows = (KV_HEADS if selection == "group" else Q_HEADS) * _queries(phase)
    return [
        Kernel(
            "q_proj",
            per_query_heads(terms, "q_proj"),
            2 * vectors_bytes(phase) + _projection_bytes(),
            "contiguous",
        ),
        Kernel(
            "k_proj",
            per_query_heads(terms, "k_proj"),
            2 * memory.head_tensor_bytes(new_keys) + _projection_bytes(),
            "contiguous",
        ),
        Kernel(
            "topk",
            per_query_heads(terms, "select"),
            vectors_bytes(phase) + Q_HEADS * _queries(phase) * k * (s + INDEX_BYTES) + topk_extra_bytes,
            "contiguous",
            launches=topk_launches,
            unit="vector",
            op="topk",
            op_rows=topk_rows,
            op_length=d,
        ),
    ]


def _eager_tail(phase: str, dense_terms: dict[str, sp.Expr]) -> list[Kernel]:
    """softmax and value of an eager plan: scores materialised as a full [queries, keys] matrix."""
    score_elems = Q_HEADS * _queries(phase) * _keys(phase)
    return [
        Kernel(
            "softmax",
            per_query_heads(dense_terms, "softmax"),
            2 * score_elems * s,
            "contiguous",
            unit="vector",
            op="softmax",
            op_rows=Q_HEADS * _queries(phase),
            op_length=_keys(phase),
        ),
        Kernel(
            "value",
            per_query_heads(dense_terms, "value"),
            score_elems * s + KV_HEADS * memory.head_tensor_bytes(_keys(phase)) + vectors_bytes(phase),
            "contiguous",
            stream="torch-matvec" if phase == "decode" else "",
        ),
    ]


_TRITON = "aqua_model.kernels.triton_decode"
_EAGER = "aqua_model.kernels.eager"
_SDPA = Implementation.of("torch.nn.functional", "scaled_dot_product_attention")
#: What implements each plan, and the key copy it reads; a plan absent here is model-only.
IMPLEMENTATIONS: dict[tuple[str, str], tuple[Implementation, str]] = {
    ("decode", "dense-fused"): (_SDPA, "token-major"),
    ("decode", "dense-eager"): (Implementation.of(_EAGER, "dense_eager_decode"), "token-major"),
    ("decode", "aqua-eager"): (Implementation.of(_EAGER, "aqua_eager_decode"), "rotated-dim-major"),
    ("decode", "aqua-fused"): (Implementation.of(_TRITON, "aqua_decode"), "rotated-dim-major"),
    ("decode", "aqua-token-major"): (Implementation.of(_TRITON, "aqua_decode"), "rotated-token-major"),
    ("decode", "aqua-fused-3launch"): (
        Implementation.of(_TRITON, "aqua_decode", launches=3),
        "rotated-dim-major",
    ),
    ("decode", "aqua-fused-exact"): (Implementation.of(_TRITON, "aqua_decode"), "rotated-dim-major-exact"),
    ("decode", "aqua-step-topk"): (
        Implementation.of(_EAGER, "aqua_step_decode", select_in="torch"),
        "rotated-dim-major",
    ),
    ("decode", "aqua-step-topk-token-major"): (
        Implementation.of(_EAGER, "aqua_step_decode", select_in="torch"),
        "rotated-token-major",
    ),
    ("decode", "aqua-cache-step"): (
        Implementation.of("aqua_model.kernels.kv_cache", "decode_step"),
        "rotated-dim-major",
    ),
    ("prefill", "dense-fused"): (_SDPA, "token-major"),
    ("prefill", "dense-eager"): (Implementation.of(_EAGER, "dense_eager_prefill"), "token-major"),
    ("prefill", "aqua-eager"): (Implementation.of(_EAGER, "aqua_eager_prefill"), "rotated-token-major"),
}
#: One line per plan: what it is.
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("decode", "dense-fused"): "dense attention, one fused kernel (torch SDPA) reading K and V once",
    ("decode", "dense-eager"): "dense attention in eager torch: scores, softmax, value; scores materialised",
    (
        "decode",
        "aqua-eager",
    ): "AQUA in eager torch: rotate q and the new key, torch.topk, gather a copy of the kept key rows, "
    "scores, softmax, value",
    (
        "decode",
        "aqua-fused",
    ): "AQUA attention as aqua_decode's default call: rotated q given, one Triton launch (each split "
    "program selects, streams the kept rows of a dim-major K^T and V; the last split merges); "
    "rotating q and the new key is not counted",
    (
        "decode",
        "aqua-token-major",
    ): "aqua_decode's default call over a token-major K^ view: whole sectors per kept channel",
    (
        "decode",
        "aqua-fused-3launch",
    ): "aqua_decode(launches=3): the three-launch path (Triton selection prologue, split-N pass, "
    "log-sum-exp combine) over a dim-major K^T; rotated q given",
    (
        "decode",
        "aqua-fused-exact",
    ): "aqua_decode's default call over a contiguous exactly-N dim-major K^T (row stride N, not a "
    "16-aligned capacity): scalar key loads when N % 16 != 0; runnable, not in the fit protocol's sample (its misaligned factor "
    "is the micro-benchmark's)",
    (
        "decode",
        "aqua-step-topk",
    ): "an AQUA decode step: rotate q and the new key (torch.bmm), torch.topk selection, then "
    "the three-launch Triton path with those indices (the validation suite's path until issue 11)",
    ("decode", "aqua-step-topk-token-major"): "the aqua-step-topk step over a token-major K^ view",
    (
        "decode",
        "aqua-cache-step",
    ): "a whole AQUA decode step on AquaKVCache in one Triton launch: each split program rotates q "
    "and selects, the program holding the new position rotates and appends k^ and v; split-N pass "
    "and merge over the cache",
    ("prefill", "dense-fused"): "dense causal prefill, one fused kernel (torch SDPA), visible pairs only",
    (
        "prefill",
        "dense-eager",
    ): "dense prefill in eager torch: the full rectangle of scores, a causal mask pass, softmax, value",
    (
        "prefill",
        "aqua-eager",
    ): "AQUA prefill in eager torch: per-query selection as a 0/1 mask on q^ (no FLOP saving in the matmul)",
    (
        "prefill",
        "aqua-fused",
    ): "model-only: an ideal fused AQUA prefill kernel doing 2k FLOPs per visible pair (not built)",
}


@cache
def build_plan(
    name: str, *, phase: str = "decode", selection: str = "group", convention: Convention | None = None
) -> Plan:
    """The plan called ``name`` for ``phase``; see the module docstring for the list."""
    check_choice("phase", phase, PHASES)
    check_choice("plan", name, DECODE_PLANS if phase == "decode" else PREFILL_PLANS)
    check_choice("selection", selection, GQA_SELECTIONS)
    if (
        phase == "prefill" and name in prefill_fused.PLANS
    ):  # the tiled prefill kernel (plans/prefill_fused.py)
        return prefill_fused.build(name, convention=convention)
    conv = resolve(convention)
    method = name.split("-", 1)[0]
    if phase == "decode":
        kernels = _decode_kernels(name, selection, conv)
    else:
        kernels = _prefill_kernels(name, conv)
    impl, layout = IMPLEMENTATIONS.get((phase, name), (None, ""))
    return Plan(
        name=name,
        method=method,
        phase=phase,
        selection=selection,
        kernels=tuple(kernels),
        description=DESCRIPTIONS[(phase, name)],
        implementation=impl,
        key_layout=layout,
    )


def split_tile_rows(selection: str) -> sp.Expr:
    """Key rows one split-N program holds (:func:`aqua_model.costs.split_rule.tile_rows`): k when
    the group shares one selection, else up to the union of its g heads' rows, min(d, g k)."""
    return k if selection == "group" else sp.Min(d, (H_q / H_kv) * k)


def key_row_stride(name: str) -> sp.Expr:
    """Row stride (elements) of the dim-major K^T the decode plan ``name`` streams, as its
    implementation is run: a view of a capacity rounded up to a multiple of 16
    (:func:`aqua_model.costs.alignment.aligned_capacity`, what ``AquaKVCache`` allocates and the
    validation workload measures); exactly N for ``aqua-fused-exact`` (a contiguous [d, N]
    tensor); 0 (aligned by construction, or no row stride) for the paged cache step and the
    token-major views."""
    if name.endswith("token-major") or name == "aqua-cache-step":
        return sp.Integer(0)
    if name == "aqua-fused-exact":
        return N
    return aligned_capacity(N)


def _split_n(
    name: str, selection: str, attention_flops: sp.Expr, kv_bytes: sp.Expr, extra_bytes: sp.Expr, pattern: str
) -> list[Kernel]:
    """The split pass (``attention``: K^'s kept rows and V, the selected q^ and indices) and the
    combine (the merge of the splits, writing the output). The splits' partial outputs (B H_q
    splits (d + 2) fp32 values) are not counted as bytes: small against K and V, and inside
    the combine's calibrated time. Row stride: :func:`key_row_stride`."""
    token_major = name.endswith("token-major")
    attention = Kernel(
        "attention",
        attention_flops,
        kv_bytes + extra_bytes,
        pattern,
        op="attention",
        launch_names=(TRITON_SPLIT,),
        stream="" if token_major else "triton-split",
        tile_rows=split_tile_rows(selection),
        row_stride=key_row_stride(name),
    )
    combine = Kernel(
        "combine",
        sp.Integer(0),
        vectors_bytes("decode"),
        "contiguous",
        unit="vector",
        launch_names=(TRITON_COMBINE,),
        stream="triton-combine",
    )
    return [attention, combine]


def _one_launch(
    name: str, selection: str, flops: sp.Expr, kv_bytes: sp.Expr, extra_bytes: sp.Expr, pattern: str
) -> Kernel:
    """The one-launch Triton decode (``_fused_kernel``): every split program selects its group's
    kept rows itself from q^ (the selection FLOPs are counted once per query head: the programs
    of one group repeat the same few hundred compares), streams its chunk of K^'s kept rows and
    V, and the last split of each (batch, KV head) to finish merges the partials. Bytes: K^'s
    kept rows and V, q read and the output written (the fp32 partials of a several-split call,
    B H_q splits (d + 2) values, stay in L2 and are not counted). Row stride:
    :func:`key_row_stride`. Kept rows, not the tile: a row tile padded past the kept rows (k < 16
    at any d, :func:`aqua_model.costs.split_rule.padded_tile_rows`) loads only the kept rows, the
    padding slots being masked loads (``triton_decode._part_scores``, ``mask=valid``) that move no
    bytes; the padding's per-block work is not a byte (a tile-fill factor on the form's efficiency
    was tried on the seed-2324754193 train -> calibration split and not kept: see the commit).
    The L2 prefetch of each program's first V block before its selection
    (:data:`aqua_model.costs.split_rule.FUSED_PREFETCH_VALUE_BLOCKS`) asks early for bytes the
    program streams anyway: no bytes and no launch are added."""
    token_major = name.endswith("token-major")
    return Kernel(
        "attention",
        flops,
        kv_bytes + extra_bytes,
        pattern,
        op="attention",
        launch_names=(TRITON_FUSED,),
        stream="" if token_major else "triton-split",
        tile_rows=split_tile_rows(selection),
        row_stride=key_row_stride(name),
    )


def _decode_kernels(name: str, selection: str, conv: Convention) -> list[Kernel]:
    dense = flop_terms("dense", "decode", conv)
    aqua = flop_terms("aqua", "decode", conv)
    kv_dense = KV_HEADS * memory.decode_read_bytes("dense")
    one_kv = KV_HEADS * memory.head_tensor_bytes()  # K (or V) of N tokens, every KV head of the batch
    if name == "dense-fused":
        # cuDNN's flash decode kernel splits N and writes partials; its reduction merges them
        return [
            Kernel(
                "attention",
                per_query_heads(dense, "scores", "softmax", "value"),
                kv_dense + vectors_bytes("decode"),
                "contiguous",
                op="attention",
                stream="sdpa-decode",
            ),
            Kernel("reduce", sp.Integer(0), vectors_bytes("decode"), "contiguous", unit="vector"),
        ]
    if name == "dense-eager":
        scores = Kernel(
            "scores",
            per_query_heads(dense, "scores"),
            one_kv + vectors_bytes("decode") + Q_HEADS * N * s,
            "contiguous",
            stream="torch-matvec",
        )
        return [scores, *_eager_tail("decode", dense)]
    layout, pattern = (
        ("token-major", "strided") if name.endswith("token-major") else ("dim-major", "contiguous")
    )
    kv_aqua = KV_HEADS * memory.decode_read_bytes(
        "aqua", layout=layout, selection=selection, pattern="random"
    )
    attention_flops = per_query_heads(aqua, "scores", "softmax", "value")
    if name == "aqua-fused-3launch":
        # the three-launch path: the prologue writes, per KV group, the kept rows (int32) and each
        # head's q^ on them, read back by the split pass; then the combine
        rows = KV_HEADS * memory.selected_dims(selection) * (INDEX32_BYTES + (H_q / H_kv) * s)
        select = Kernel(
            "select",
            per_query_heads(aqua, "select"),
            vectors_bytes("decode") + rows,
            "contiguous",
            unit="vector",
            launch_names=(TRITON_PROLOGUE,),
            stream="triton-prologue",
        )
        return [select, *_split_n(name, selection, attention_flops, kv_aqua, rows, pattern)]
    if name in ("aqua-fused", "aqua-fused-exact", "aqua-token-major"):
        # one launch: q^ read, the selection inside each program, the output written
        flops = per_query_heads(aqua, "select") + attention_flops
        return [_one_launch(name, selection, flops, kv_aqua, 2 * vectors_bytes("decode"), pattern)]
    if name == "aqua-cache-step":
        # the same launch also rotates q (per query head) and the new key (per KV head) by P, and
        # the program whose chunk holds the new token writes k^ and v there: P, the new key and
        # value read, k^ and v written
        new_kv = 2 * KV_HEADS * d * s
        flops = per_query_heads(aqua, "q_proj", "k_proj", "select") + attention_flops
        extra = 2 * vectors_bytes("decode") + _projection_bytes() + 2 * new_kv
        return [_one_launch(name, selection, flops, kv_aqua, extra, pattern)]
    if name == "aqua-eager":
        prologue = aqua_prologue("decode", aqua)
        # torch.gather reads the selected dims of each query head's KV group and writes a
        # [N, k] copy per query head (one launch), then gathers q^'s kept dims (a second);
        # the matmul then reads that copy.
        gathered = Q_HEADS * N * k * s
        gather = Kernel(
            "gather",
            sp.Integer(0),
            Q_HEADS * N * k * s + gathered + Q_HEADS * k * (INDEX_BYTES + 2 * s),
            "gather",
            launches=2,
        )
        scores = Kernel(
            "scores",
            per_query_heads(aqua, "scores"),
            gathered + vectors_bytes("decode") + Q_HEADS * N * s,
            "contiguous",
            stream="torch-matvec",
        )
        return [*prologue, gather, scores, *_eager_tail("decode", dense)]
    # aqua-step-topk and its token-major variant: rotate (torch.bmm), select with torch.topk inside
    # aqua_decode(select_in="torch"), then the three-launch Triton path with the given indices
    # the selection's float copy of |q^| (written, then read by the sum: 2 x 4 bytes per element)
    # and the int32 copy of the indices it hands the prologue
    given_index_bytes = (KV_HEADS if selection == "group" else Q_HEADS) * k * INDEX32_BYTES
    prologue = aqua_prologue(
        "decode",
        aqua,
        topk_launches=STEP_TOPK_LAUNCHES[selection],
        topk_extra_bytes=Q_HEADS * d * (2 * 4) + given_index_bytes,
        selection=selection,
    )
    # given indices run the three-launch path (split_rule.GIVEN_LAUNCHES): the Triton prologue with
    # those indices writes, per KV group, the kept rows (int32) and each head's q^ on them, read
    # back by the split pass; then the combine
    rows = KV_HEADS * memory.selected_dims(selection) * (INDEX32_BYTES + (H_q / H_kv) * s)
    given = Kernel(
        "select",
        sp.Integer(0),
        vectors_bytes("decode") + given_index_bytes + rows,
        "contiguous",
        unit="vector",
        launch_names=(TRITON_PROLOGUE,),
        stream="triton-prologue",
    )
    return [*prologue, given, *_split_n(name, selection, attention_flops, kv_aqua, rows, pattern)]


def _prefill_kernels(name: str, conv: Convention) -> list[Kernel]:
    dense_causal = flop_terms("dense", "prefill", conv, True)
    dense_rect = flop_terms("dense", "prefill", conv, False)
    aqua = flop_terms("aqua", "prefill", conv, True)
    kv_read = KV_HEADS * memory.kv_cache_bytes("dense").subs(N, N + T)  # K and V of the cached and new tokens
    io = 2 * vectors_bytes("prefill")
    if name == "dense-fused":
        return [
            Kernel(
                "attention",
                per_query_heads(dense_causal, "scores", "softmax", "value"),
                kv_read + io,
                "contiguous",
                op="attention",
                stream="sdpa-prefill",
            )
        ]
    if name == "aqua-fused":
        return [
            *aqua_prologue("prefill", aqua),
            Kernel(
                "attention",
                per_query_heads(aqua, "scores", "softmax", "value"),
                kv_read + io + Q_HEADS * T * k * INDEX_BYTES,
                "contiguous",
                op="attention",
            ),
        ]
    score_elems = Q_HEADS * T * (N + T)
    keys_read = KV_HEADS * memory.head_tensor_bytes(N + T)
    scores = Kernel(
        "scores",
        per_query_heads(dense_rect, "scores"),
        keys_read + vectors_bytes("prefill") + score_elems * s,
        "contiguous",
    )
    # the causal mask is applied to the materialised scores in place: one more read and write
    mask = Kernel("mask", sp.Integer(0), 2 * score_elems * s, "contiguous", unit="vector")
    tail = [mask, *_eager_tail("prefill", dense_rect)]
    if name == "dense-eager":
        return [scores, *tail]
    # the selection also writes a 0/1 keep mask [B, H_kv, T, d] (a zero fill, then a scatter);
    # the scores first multiply q^ by it (read q^ and the mask, write the masked q^), then the matmul
    keep = KV_HEADS * T * d * s
    masked = Kernel(
        "scores",
        per_query_heads(dense_rect, "scores"),
        scores.bytes + 2 * vectors_bytes("prefill") + keep,
        "contiguous",
        launches=2,
    )
    return [
        *aqua_prologue("prefill", aqua, topk_launches=PREFILL_TOPK_LAUNCHES, topk_extra_bytes=2 * keep),
        masked,
        *tail,
    ]


def plan_names(phase: str) -> tuple[str, ...]:
    """The plans available for ``phase``."""
    return DECODE_PLANS if check_choice("phase", phase, PHASES) == "decode" else PREFILL_PLANS


__all__ = [
    "build_plan",
    "plan_names",
    "split_tile_rows",
    "key_row_stride",
    "DECODE_PLANS",
    "PREFILL_PLANS",
    "LEGACY_PLAN_NAMES",
    "IMPLEMENTATIONS",
    "TOPK_LAUNCHES",
    "TORCH_TOPK_LAUNCHES",
    "STEP_TOPK_LAUNCHES",
    "PREFILL_TOPK_LAUNCHES",
    "SPLIT_N_LAUNCHES",
]
