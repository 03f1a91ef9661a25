"""Element types: their names and their storage size in bytes.

Storage dtypes (``bf16``, ``fp16``, ``fp32``) are what weights and activations are kept in;
compute dtypes add ``tf32``, a tensor-core mode that reads fp32 storage. A hardware profile
gives a peak rate per compute dtype; a model config names one storage dtype.

KV-cache dtypes add two quantised formats, each with its scales as a named assumption:

* ``fp8`` (e4m3 or e5m2): 1 byte per element, with one fp32 scale per KV tensor of a layer
  (vLLM's ``k_scale`` / ``v_scale``), negligible beside N*d elements: counted as 0.
* ``int4``: 0.5 byte per element plus, per group of :data:`INT4_GROUP_ELEMENTS` elements,
  a scale and a zero point of :data:`INT4_SCALE_BYTES_PER_GROUP` bytes together (KIVI-style
  asymmetric group quantisation: keys grouped along the tokens of each channel, values along
  the channels of each token). A group's scales are read with its elements, so reading k of d
  key rows of a dim-major cache reads k/d of the key scales: every byte expression scales by
  the same per-element size and the byte ceiling 2d/(k+d) does not move.

:func:`kv_element_bytes` is the one home of these sizes (the symbol ``s`` of the cost model).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from aqua_model._checks import check_choice, check_int_array

#: Bytes per element of each storage dtype.
DTYPE_BYTES: Mapping[str, int] = MappingProxyType({"bf16": 2, "fp16": 2, "fp32": 4})

#: Element sizes a ``dtype_bytes`` argument may take: the widths of the element types that exist
#: (fp8 / int8, bf16 / fp16, fp32, fp64). Each divides a memory sector (32 bytes and up), which the
#: token-major sector model needs: a whole number of elements per sector.
ELEMENT_BYTES: tuple[int, ...] = (1, 2, 4, 8)

#: Storage dtypes, in a stable order.
STORAGE_DTYPES: tuple[str, ...] = tuple(DTYPE_BYTES)

#: Dtypes a hardware profile may quote a peak rate for (``tf32`` reads fp32 storage).
COMPUTE_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp32", "tf32")

#: fp8 KV cache: bytes per element (e4m3 / e5m2); its per-tensor fp32 scales are counted as 0.
FP8_ELEMENT_BYTES = 1.0
#: int4 KV cache: bytes per element, before scales (two 4-bit values per byte).
INT4_ELEMENT_BYTES = 0.5
#: int4 KV cache: elements sharing one scale and zero point (assumption: KIVI's group of 32).
INT4_GROUP_ELEMENTS = 32
#: int4 KV cache: bytes of one group's scale plus zero point (assumption: an fp16 each).
INT4_SCALE_BYTES_PER_GROUP = 4.0

#: Bytes per KV-cache element, scales included, of every KV-cache dtype.
KV_DTYPE_BYTES: Mapping[str, float] = MappingProxyType(
    {
        **{name: float(size) for name, size in DTYPE_BYTES.items()},
        "fp8": FP8_ELEMENT_BYTES,
        "int4": INT4_ELEMENT_BYTES + INT4_SCALE_BYTES_PER_GROUP / INT4_GROUP_ELEMENTS,
    }
)

#: KV-cache dtypes, in a stable order: the storage dtypes, then fp8 and int4.
KV_DTYPES: tuple[str, ...] = tuple(KV_DTYPE_BYTES)

#: KV-cache dtypes that are quantised (stored narrower than the attention computes in).
QUANTISED_KV_DTYPES: tuple[str, ...] = ("fp8", "int4")


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of storage dtype ``dtype`` (``"bf16"``, ``"fp16"`` or ``"fp32"``)."""
    return DTYPE_BYTES[check_choice("dtype", dtype, STORAGE_DTYPES)]


def kv_element_bytes(kv_dtype: str) -> float:
    """Bytes per KV-cache element of ``kv_dtype``, its scales included: 2 for bf16/fp16, 4 for
    fp32, 1 for fp8, 0.5 + 4/32 = 0.625 for int4 (see the module docstring)."""
    return KV_DTYPE_BYTES[check_choice("kv_dtype", kv_dtype, KV_DTYPES)]


def check_element_bytes(name: str, value: Any) -> np.ndarray:
    """``value`` (an int or int array) as an int64 array whose every element is one of
    :data:`ELEMENT_BYTES`, else ValueError naming ``name``."""
    arr = check_int_array(name, value, minimum=1)
    bad = sorted({int(v) for v in np.ravel(arr) if int(v) not in ELEMENT_BYTES})
    if bad:
        raise ValueError(
            f"{name} must be one of {', '.join(map(str, ELEMENT_BYTES))} (the element sizes that exist: "
            f"fp8/int8, bf16/fp16, fp32, fp64), got {bad[0]}"
        )
    return arr


def check_whole_elements_per_sector(sector_bytes: Any, element_bytes: Any) -> None:
    """Raise unless every sector holds a whole number of elements (token-major sector model)."""
    S, s = np.broadcast_arrays(np.asarray(sector_bytes, dtype=float), np.asarray(element_bytes, dtype=float))
    ratio = S / s
    if np.any(ratio != np.round(ratio)) or np.any(ratio < 1):
        raise ValueError(
            f"sector_bytes must be a multiple of the element size for the token-major sector model, got "
            f"sector_bytes={np.ravel(S)[0]:g} with {np.ravel(s)[0]:g}-byte elements"
        )


def check_compute_dtype(dtype: str) -> str:
    """Return ``dtype`` if a peak rate can be quoted for it, else raise naming the allowed ones."""
    return check_choice("dtype", dtype, COMPUTE_DTYPES)
