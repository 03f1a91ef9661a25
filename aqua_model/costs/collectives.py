"""Symbolic time of the collectives that tensor and pipeline parallelism add to a decode step.

Each algorithm's time is a sum of named terms over the symbols of :mod:`.symbols`:

* ``fixed``: alpha_0, once per call (launching the collective kernel, the handshake);
* ``latency``: alpha per step a message crosses a link;
* ``bandwidth``: the bytes one device sends over one direction of its link, over beta.

All-reduce of M bytes on each of t devices (the sum lands on every device):

* ``ring``: reduce-scatter then all-gather around a ring (Patarasuk and Yuan, "Bandwidth optimal
  all-reduce algorithms for clusters of workstations", JPDC 2009; Thakur, Rabenseifner and Gropp,
  "Optimization of collective communication operations in MPICH", IJHPCA 2005): 2(t-1) steps, each
  device sends 2(t-1)/t * M bytes. Time alpha_0 + 2(t-1) alpha + 2(t-1)/t * M / beta.
* ``tree``: a pipelined reduce up a binary tree then a broadcast down it, as NCCL's double binary
  tree (Sanders, Speck and Traeff, "Two-tree algorithms for full bandwidth broadcast, reduction and
  scan", Parallel Computing 2009): a complete binary tree of t devices is floor(log2 t) links deep,
  so 2 floor(log2 t) steps. Each device is an inner node of one tree and a leaf of the other, each
  tree carrying half the message: an inner node sends M/2 up and M/2 to each of two children, a
  leaf M/2 up, so every device sends 2M in all. Time alpha_0 + 2 floor(log2 t) alpha + 2 M / beta.

The ring moves fewer bytes (2(t-1)/t < 2) and the tree takes fewer steps (2 floor(log2 t) < 2(t-1)
for t > 2): small messages, the decode case, favour the tree, large ones the ring. NCCL builds the
same bandwidth terms into its tuning model (algorithm bandwidth = bus bandwidth * t / (2(t-1))
for the ring, / 2 for the tree). Inside one node NCCL's "tree" is a chain (2(t-1) steps); the
textbook tree here is what a switch-connected node allows.

Point-to-point (one pipeline-stage boundary): alpha_0 + alpha + M / beta.

Named assumptions: the reduction's arithmetic is fused into the copies and hidden behind the link
(a GPU sums bytes at device-memory speed, many times a link's); a device sends and receives at
the same time at beta each way; all links are alike (a switch, or a full mesh).
These formulas hold for t >= 2: with one device there is no collective, and callers use 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sympy as sp

from .._checks import check_choice, check_int_array
from .numeric import evaluate
from .symbols import M, alpha, alpha_0, beta, log2, t

#: All-reduce algorithms with a closed form here.
ALGORITHMS: tuple[str, ...] = ("ring", "tree")
#: Names of the terms every collective's time is the sum of.
TERMS: tuple[str, ...] = ("fixed", "latency", "bandwidth")


def all_reduce_steps(algorithm: str) -> sp.Expr:
    """Steps a message crosses a link in an all-reduce over t devices (t >= 2)."""
    check_choice("algorithm", algorithm, ALGORITHMS)
    if algorithm == "ring":
        return 2 * (t - 1)
    return 2 * sp.floor(log2(t))


def all_reduce_sent_bytes(algorithm: str) -> sp.Expr:
    """Bytes one device sends over one direction of its link in an all-reduce of M bytes."""
    check_choice("algorithm", algorithm, ALGORITHMS)
    if algorithm == "ring":
        return 2 * (t - 1) / t * M
    return 2 * M


def all_reduce_terms(algorithm: str) -> dict[str, sp.Expr]:
    """Fixed, latency and bandwidth terms (seconds) of an all-reduce of M bytes on t devices."""
    return {
        "fixed": alpha_0,
        "latency": all_reduce_steps(algorithm) * alpha,
        "bandwidth": all_reduce_sent_bytes(algorithm) / beta,
    }


def all_reduce_time(algorithm: str) -> sp.Expr:
    """Time (s) of an all-reduce of M bytes on each of t >= 2 devices: the sum of its terms."""
    return sp.Add(*all_reduce_terms(algorithm).values())


def point_to_point_terms() -> dict[str, sp.Expr]:
    """Fixed, latency and bandwidth terms (seconds) of sending M bytes to one other device."""
    return {"fixed": alpha_0, "latency": alpha, "bandwidth": M / beta}


def point_to_point_time() -> sp.Expr:
    """Time (s) of one point-to-point transfer of M bytes."""
    return sp.Add(*point_to_point_terms().values())


def _values(
    devices: Any, message_bytes: Any, bandwidth_bytes_per_s: Any, step_latency_s: Any, fixed_latency_s: Any
) -> dict[str, Any]:
    values = {
        "t": check_int_array("devices", devices, minimum=1),
        "M": np.asarray(message_bytes, dtype=float),
        "beta": np.asarray(bandwidth_bytes_per_s, dtype=float),
        "alpha": np.asarray(step_latency_s, dtype=float),
        "alpha_0": np.asarray(fixed_latency_s, dtype=float),
    }
    for name, key, strict in (
        ("message_bytes", "M", False),
        ("bandwidth_bytes_per_s", "beta", True),
        ("step_latency_s", "alpha", False),
        ("fixed_latency_s", "alpha_0", False),
    ):
        arr = values[key]
        bad = ~np.isfinite(arr) | ((arr <= 0) if strict else (arr < 0))
        if arr.size == 0 or np.any(bad):
            want = "> 0" if strict else ">= 0"
            raise ValueError(f"{name} must be finite and {want}, got {arr.tolist() if arr.size < 8 else arr}")
    return values


def all_reduce_s(
    *,
    algorithm: str,
    devices: Any,
    message_bytes: Any,
    bandwidth_bytes_per_s: Any,
    step_latency_s: Any,
    fixed_latency_s: Any,
) -> Any:
    """All-reduce time (s), vectorised; 0 where ``devices`` is 1 (nothing to reduce).

    ``bandwidth_bytes_per_s`` is the achieved bandwidth per device and direction (beta).
    """
    values = _values(devices, message_bytes, bandwidth_bytes_per_s, step_latency_s, fixed_latency_s)
    many = np.maximum(values["t"], 2)  # the closed form needs t >= 2; t = 1 is masked to 0 below
    out = evaluate(all_reduce_time(algorithm), {**values, "t": many})
    return np.where(values["t"] > 1, out, 0.0)


def point_to_point_s(
    *, message_bytes: Any, bandwidth_bytes_per_s: Any, step_latency_s: Any, fixed_latency_s: Any
) -> Any:
    """Time (s) of one point-to-point transfer of ``message_bytes``, vectorised."""
    values = _values(2, message_bytes, bandwidth_bytes_per_s, step_latency_s, fixed_latency_s)
    del values["t"]
    return evaluate(point_to_point_time(), values)
