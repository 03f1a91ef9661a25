"""aqua-model: closed forms, roofline predictions and GPU measurements for AQUA attention.

AQUA (Attention via QUery mAgnitudes, arXiv 2509.11155) rotates queries and keys by an
offline SVD basis and keeps, per query, the k of d rotated dims with the largest |q^|.

The public API is this module's functions: :func:`breakeven` and :func:`max_k` (FLOP
break-even, closed form), :func:`predict` (one plan's time, total and per kernel),
:func:`simulate`, :func:`speedup`, :func:`end_to_end`, :func:`time_breakeven` and
:func:`compare` (AQUA beside its peers). Layers, lowest first: costs -> kernels -> hardware, models ->
plans -> simulator -> fidelity, integrations, validate, plots -> commands -> cli
(see ``tests/test_import_layers.py``).
"""

from .costs import component_flops, decode_read_bytes, kv_cache_bytes
from .costs.convention import Convention
from .costs.flop_breakeven import BreakEven, breakeven, max_k
from .simulator import compare, end_to_end, predict, simulate, speedup, time_breakeven

__version__ = "0.1.0"

__all__ = [
    "BreakEven",
    "Convention",
    "breakeven",
    "compare",
    "component_flops",
    "decode_read_bytes",
    "end_to_end",
    "kv_cache_bytes",
    "max_k",
    "predict",
    "simulate",
    "speedup",
    "time_breakeven",
    "__version__",
]
