"""aqua-model: closed forms, roofline predictions and GPU measurements for AQUA attention.

AQUA (Attention via QUery mAgnitudes, arXiv 2509.11155) rotates queries and keys by an
offline SVD basis and keeps, per query, the k of d rotated dims with the largest |q^|.
"""

from .breakeven import BreakEven, breakeven, max_k
from .convention import Convention
from .costs import component_flops, decode_read_bytes, kv_cache_bytes

__version__ = "0.1.0"

__all__ = ["BreakEven", "Convention", "breakeven", "component_flops", "decode_read_bytes", "kv_cache_bytes", "max_k", "__version__"]
