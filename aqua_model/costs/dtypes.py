"""Element types: their names and their storage size in bytes.

Storage dtypes (``bf16``, ``fp16``, ``fp32``) are what tensors are kept in; compute dtypes
add ``tf32``, a tensor-core mode that reads fp32 storage. A hardware profile gives a peak
rate per compute dtype; a model config names one storage dtype.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from aqua_model._checks import check_choice

#: Bytes per element of each storage dtype.
DTYPE_BYTES: Mapping[str, int] = MappingProxyType({"bf16": 2, "fp16": 2, "fp32": 4})

#: Storage dtypes, in a stable order.
STORAGE_DTYPES: tuple[str, ...] = tuple(DTYPE_BYTES)

#: Dtypes a hardware profile may quote a peak rate for (``tf32`` reads fp32 storage).
COMPUTE_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp32", "tf32")


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of storage dtype ``dtype`` (``"bf16"``, ``"fp16"`` or ``"fp32"``)."""
    return DTYPE_BYTES[check_choice("dtype", dtype, STORAGE_DTYPES)]


def check_compute_dtype(dtype: str) -> str:
    """Return ``dtype`` if a peak rate can be quoted for it, else raise naming the allowed ones."""
    return check_choice("dtype", dtype, COMPUTE_DTYPES)
