"""The types of the plans layer: a :class:`Kernel` (one launch of an implementation, with
symbolic FLOPs and bytes), a :class:`Plan` (the kernels in launch order) and the
:class:`Implementation` a plan describes (the runnable callable, named by import path and
resolved lazily, so that no plan module imports torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy as sp

from .._checks import check_choice
from ..costs.memory import PATTERNS
from ..hardware.calibrated_terms import STREAM_NAMES

#: Bytes of one top-k index as torch returns it (int64).
INDEX_BYTES = 8
#: Compute units a kernel's FLOPs run on: tensor-core matmul in the storage dtype, or
#: CUDA-core fp32 arithmetic (softmax, magnitudes and selection).
COMPUTE_UNITS = ("matrix", "vector")
#: Library kernels a calibrated profile can measure directly, because a roofline of their
#: bytes and FLOPs cannot see their cost: ``topk`` (torch.topk over rows of length d: a fixed
#: time), ``softmax`` (torch.softmax: bandwidth efficiency against row length) and
#: ``attention`` (a fused attention kernel: its own compute efficiency).
LIBRARY_OPS = ("", "topk", "softmax", "attention")
#: Implementation kernels whose own device time a calibrated profile measures by micro-benchmarks
#: (``[calibration] stream`` tables, :class:`aqua_model.hardware.profile.StreamTable`): torch
#: SDPA's decode and causal-prefill kernels, the three kernels of the Triton split-N decode
#: (prologue, split pass, combine) and torch's matmul/matvec kernels of the eager plans. ""
#: means the generic roofline of the kernel's access pattern.
STREAMS = ("",) + STREAM_NAMES
#: The word a plan without an implementation must carry in its description.
MODEL_ONLY = "model-only"
#: Key copies an implementation may read: token-major K, rotated token-major K^, rotated
#: dim-major K^T ("" for a model-only plan).
KEY_LAYOUTS = ("", "token-major", "rotated-token-major", "rotated-dim-major", "rotated-dim-major-exact")


@dataclass(frozen=True)
class Kernel:
    """One kernel of a plan (per layer, whole batch); ``launches`` CUDA launches.

    ``launch_names``: optional regular expressions, one per launch in order, matching the
    names of the CUDA kernels it stands for (checked by ``tests/test_launch_counts.py``).
    ``stream``: the implementation kernel whose micro-benchmarked device time a calibrated
    profile may hold (:data:`STREAMS`); ``tile_rows``: key rows one program of a split-N kernel
    holds (its launch geometry, :mod:`aqua_model.costs.split_rule`); ``row_stride``: elements
    between consecutive key rows it streams (0: aligned by construction), whose alignment to 16
    elements decides whether Triton vectorises the loads.
    """

    name: str
    flops: sp.Expr
    bytes: sp.Expr
    pattern: str
    launches: int = 1
    unit: str = "matrix"
    op: str = ""
    op_rows: sp.Expr = sp.Integer(0)
    op_length: sp.Expr = sp.Integer(0)
    launch_names: tuple[str, ...] = ()
    stream: str = ""
    tile_rows: sp.Expr = sp.Integer(0)
    row_stride: sp.Expr = sp.Integer(0)

    def __post_init__(self) -> None:
        check_choice("pattern", self.pattern, PATTERNS)
        check_choice("stream", self.stream, STREAMS)
        check_choice("unit", self.unit, COMPUTE_UNITS)
        check_choice("op", self.op, LIBRARY_OPS)
        if self.launch_names and len(self.launch_names) != self.launches:
            raise ValueError(
                f"kernel {self.name!r}: launch_names must give one pattern per launch "
                f"({self.launches}), got {len(self.launch_names)}: {self.launch_names!r}"
            )


@dataclass(frozen=True)
class Implementation:
    """The runnable code a plan describes: ``module.function`` called with fixed keyword
    arguments (``kwargs``, as sorted pairs so the declaration stays hashable).

    Nothing is imported until :meth:`resolve` is called, so declaring an implementation
    never imports torch or triton.
    """

    module: str
    function: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(module: str, function: str, **kwargs: Any) -> Implementation:
        """Build a declaration from keyword arguments."""
        return Implementation(module, function, tuple(sorted(kwargs.items())))

    @property
    def fixed_kwargs(self) -> dict[str, Any]:
        """The fixed keyword arguments as a dict."""
        return dict(self.kwargs)

    def resolve(self) -> Callable[..., Any]:
        """Import the module and return the callable (ImportError / AttributeError if absent)."""
        return getattr(importlib.import_module(self.module), self.function)

    def label(self) -> str:
        """``module.function(k=v, ...)`` for print."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        return f"{self.module}.{self.function}({args})"


@dataclass(frozen=True)
class Plan:
    """An implementation as the model sees it: a name, the method it implements, a phase, its
    kernels in launch order, a description, and the :class:`Implementation` it describes
    (``None`` for a plan nothing implements: its description then says "model-only")."""

    name: str
    method: str
    phase: str
    selection: str
    kernels: tuple[Kernel, ...]
    description: str = MODEL_ONLY
    implementation: Implementation | None = None
    key_layout: str = ""

    def __post_init__(self) -> None:
        check_choice("key_layout", self.key_layout, KEY_LAYOUTS)
        if self.implementation is None and MODEL_ONLY not in self.description:
            raise ValueError(
                f"plan {self.name!r} has no implementation, so its description must say "
                f"{MODEL_ONLY!r}; got {self.description!r}"
            )

    @property
    def model_only(self) -> bool:
        """True when no runnable implementation stands behind the plan."""
        return self.implementation is None

    @property
    def flops(self) -> sp.Expr:
        return sp.Add(*(kern.flops for kern in self.kernels))

    @property
    def bytes(self) -> sp.Expr:
        return sp.Add(*(kern.bytes for kern in self.kernels))

    @property
    def launches(self) -> int:
        """CUDA launches of the whole plan."""
        return sum(kern.launches for kern in self.kernels)

    def launch_names(self) -> tuple[str, ...] | None:
        """One name pattern per launch, in order, or None if a kernel gives none."""
        if any(not kern.launch_names for kern in self.kernels):
            return None
        return tuple(name for kern in self.kernels for name in kern.launch_names)


def describe(plan: Plan) -> str:
    """One line: the description and what implements it (or "model-only")."""
    impl = "model-only" if plan.implementation is None else plan.implementation.label()
    return f"{plan.name} ({plan.phase}): {plan.description} [{impl}]"


__all__ = [
    "COMPUTE_UNITS",
    "INDEX_BYTES",
    "KEY_LAYOUTS",
    "LIBRARY_OPS",
    "MODEL_ONLY",
    "STREAMS",
    "Implementation",
    "Kernel",
    "Plan",
    "describe",
]
