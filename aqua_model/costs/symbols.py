"""Named sympy symbols of the cost model, each with its meaning.

Every symbolic expression in the package is built from these and only these symbols, so
that a closed form printed anywhere (CLI, README, figure, LaTeX) reads the same way.
"""

from __future__ import annotations

import sympy as sp

_POS = {"positive": True, "integer": True}

B = sp.Symbol("B", **_POS)  #: batch size (sequences decoded together)
H_q = sp.Symbol("H_q", **_POS)  #: query heads per layer
H_kv = sp.Symbol("H_kv", **_POS)  #: key/value heads per layer
g = sp.Symbol("g", positive=True)  #: group size H_q / H_kv (query heads sharing one KV head)
N = sp.Symbol("N", **_POS)  #: cached context: keys a decode query attends to
T = sp.Symbol("T", **_POS)  #: prompt length: new tokens processed by prefill
G = sp.Symbol("G", **_POS)  #: generated tokens (decode steps)
d = sp.Symbol("d", **_POS)  #: head dimension
k = sp.Symbol("k", **_POS)  #: kept (selected) rotated dimensions per query, 1 <= k <= d
m = sp.Symbol("m", **_POS)  #: statically stored key dimensions, k <= m <= d
M_t = sp.Symbol("M_t", **_POS)  #: queries sharing one dimension selection (a prefill tile; 1 = per query)
s = sp.Symbol("s", positive=True)  #: bytes per element of the KV cache (2 for bf16)
L = sp.Symbol("L", **_POS)  #: layers
S = sp.Symbol("S", **_POS)  #: memory sector size in bytes (32 on NVIDIA GPUs)
# Parameters of AQUA's peers (aqua_model.costs.peers)
r = sp.Symbol("r", **_POS)  #: approximate-score dims (SparQ top-r |q|, Loki PCA prefix)
k_t = sp.Symbol("k_t", **_POS)  #: tokens kept for exact attention (top-k tokens, Quest budget)
p = sp.Symbol("p", **_POS)  #: Quest page size, tokens per page
b = sp.Symbol("b", **_POS)  #: H2O token budget: heavy hitters plus recent window
w = sp.Symbol("w", nonnegative=True, integer=True)  #: H2O recent window (tokens), 0 <= w <= b
# Collectives between devices (aqua_model.costs.collectives)
t = sp.Symbol("t", **_POS)  #: devices taking part in a collective (the tensor-parallel degree)
M = sp.Symbol("M", positive=True)  #: bytes each device contributes to a collective (the message)
alpha = sp.Symbol("alpha", nonnegative=True)  #: latency of one step of a collective (s)
alpha_0 = sp.Symbol("alpha_0", nonnegative=True)  #: fixed latency of one collective call (s)
beta = sp.Symbol("beta", positive=True)  #: achieved link bandwidth per device and direction (bytes/s)

MEANING: dict[sp.Symbol, str] = {
    B: "batch size",
    H_q: "query heads per layer",
    H_kv: "key/value heads per layer",
    g: "group size H_q / H_kv",
    N: "cached context length (keys attended by a decode query)",
    T: "prompt length (new tokens in prefill)",
    G: "generated tokens (decode steps)",
    d: "head dimension",
    k: "kept rotated dimensions per query",
    m: "statically stored key dimensions",
    M_t: "queries sharing one dimension selection (rows of a prefill tile; 1 = per-query selection)",
    s: "bytes per element",
    L: "layers",
    S: "memory sector size in bytes",
    r: "approximate-score dims (SparQ top-r |q| dims, Loki PCA prefix dims)",
    k_t: "tokens kept for exact attention (top-k tokens; Quest token budget)",
    p: "Quest page size (tokens per page)",
    b: "H2O KV budget in tokens (heavy hitters + recent window)",
    w: "H2O recent window in tokens (0 <= w <= b)",
    t: "devices taking part in a collective (tensor-parallel degree)",
    M: "bytes each device contributes to a collective (message size)",
    alpha: "latency of one step of a collective between two devices, in s",
    alpha_0: "fixed latency of one collective call (launch and synchronisation), in s",
    beta: "achieved link bandwidth per device and direction, in bytes/s",
}

#: Lookup by the name a user types (``"N"``, ``"d"`` ...).
BY_NAME: dict[str, sp.Symbol] = {sym.name: sym for sym in MEANING}


class log2(sp.Function):
    """Base-2 logarithm kept as one opaque function so closed forms print as log2(d).

    It evaluates exactly on powers of two (log2(128) = 7) and numerically otherwise.
    """

    @classmethod
    def eval(cls, x):  # type: ignore[override]
        if x.is_Integer and x.is_positive:
            exponent = int(x).bit_length() - 1
            if sp.Integer(2) ** exponent == x:
                return sp.Integer(exponent)
        return None

    def _eval_evalf(self, prec):  # type: ignore[override]
        return (sp.log(self.args[0]) / sp.log(2))._eval_evalf(prec)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (self.args[0] * sp.log(2))

    def _eval_is_positive(self):  # type: ignore[override]
        return (self.args[0] - 1).is_positive

    def _latex(self, printer, exp=None):  # type: ignore[override]
        body = r"\log_2 " + printer._print(self.args[0])
        return body if exp is None else rf"\left({body}\right)^{{{exp}}}"
