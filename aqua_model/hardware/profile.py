"""Hardware profiles: one TOML file per device, every number with its unit and its source.

A profile is what the roofline needs to turn FLOPs and bytes into time: dense peak rates per
dtype, device-memory bandwidth, efficiency fractions (compute, and memory per access pattern,
optionally as a function of transfer size), launch overhead, sector size, memory capacity.

File schema (``schema_version = 1``)
------------------------------------
Top level: ``schema_version`` (1), ``name``, ``vendor``, ``kind`` (``"gpu"`` or ``"cpu"``),
``mode`` (``"datasheet"`` or ``"calibrated"``), optional ``aliases`` (list of names) and
``notes`` (text). Each number is a table ``{value, unit, source}`` with optional ``note``;
peak rates also carry ``sparse`` (``false`` for the dense peaks used everywhere; an optional
``peak_flops_<dtype>_sparse`` entry with ``sparse = true`` records the 2:4-sparse figure).
``source`` starts with a URL (``https://``), ``measured:`` (method, shape, date),
``assumption:`` (why) or ``derived:`` (from what).

Required numbers: ``memory_bytes``, ``hbm_bandwidth_bytes_per_s`` (device-memory bandwidth;
DRAM for a CPU), ``l2_bytes`` (the last on-chip cache in front of device memory),
``peak_flops_bf16``, ``peak_flops_fp16``, ``peak_flops_fp32`` (non-tensor), ``launch_overhead_s``,
``sector_bytes``; optional ``peak_flops_tf32``. Table ``[efficiency]`` holds ``compute`` and one
entry per memory access pattern (``contiguous``, ``strided``, ``gather``), each a fraction of
the datasheet peak (absolute, not relative to ``contiguous``). Optional tables
``[efficiency.size_table.<pattern>]`` hold ``points = [[bytes, fraction], ...]`` (bytes strictly
increasing), ``x_unit = "bytes"``, ``y_unit = "fraction"`` and ``source``; when present, the
pattern's efficiency is interpolated linearly in log(bytes) and held constant beyond the ends.

A calibrated profile has ``mode = "calibrated"`` and a ``[calibration]`` table with ``device``,
``driver``, ``torch``, ``triton``, ``date``, ``method`` and ``base`` (strings; ``base`` names the
datasheet profile it was built on); measured scalars in seconds (``*_s``) must be finite and
> 0; its mode label is
``"calibrated:<file stem>"``. Shipped files are ``"datasheet"``.

Optional table ``[interconnect]``: the link between the devices of a node (kind, devices per
node, bandwidth, latencies, efficiency), parsed by :mod:`aqua_model.hardware.interconnect`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import numpy as np

from aqua_model._checks import check_choice
from aqua_model._datafiles import alias_map, existing_file, read_toml
from aqua_model.costs.dtypes import COMPUTE_DTYPES, check_compute_dtype
from aqua_model.costs.memory import PATTERNS
from aqua_model.hardware.calibrated_terms import CalibratedTerms, parse as parse_calibrated_terms
from aqua_model.hardware.interconnect import Interconnect, parse as parse_interconnect

SCHEMA_VERSION = 1

#: Where the shipped device files live.
DATA_DIR = Path(__file__).parent / "data"

#: Prefixes a ``source`` string must start with.
SOURCE_PREFIXES: tuple[str, ...] = ("https://", "http://", "measured:", "assumption:", "derived:")

# Units accepted per dimension, with the factor to the canonical unit (the first of each).
_UNITS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "bytes": MappingProxyType(
            {"bytes": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30}
        ),
        "bytes/s": MappingProxyType({"bytes/s": 1.0, "GB/s": 1e9, "TB/s": 1e12}),
        "flop/s": MappingProxyType({"flop/s": 1.0, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "PFLOP/s": 1e15}),
        "s": MappingProxyType({"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}),
        "fraction": MappingProxyType({"fraction": 1.0}),
        "count": MappingProxyType({"count": 1.0}),
    }
)

# field name -> (dimension, required)
_NUMBER_FIELDS: Mapping[str, tuple[str, bool]] = MappingProxyType(
    {
        "memory_bytes": ("bytes", True),
        "hbm_bandwidth_bytes_per_s": ("bytes/s", True),
        "l2_bytes": ("bytes", True),
        "peak_flops_bf16": ("flop/s", True),
        "peak_flops_fp16": ("flop/s", True),
        "peak_flops_fp32": ("flop/s", True),
        "peak_flops_tf32": ("flop/s", False),
        "peak_flops_bf16_sparse": ("flop/s", False),
        "peak_flops_fp16_sparse": ("flop/s", False),
        "peak_flops_tf32_sparse": ("flop/s", False),
        "launch_overhead_s": ("s", True),
        "sector_bytes": ("bytes", True),
    }
)
_EFFICIENCY_FIELDS: tuple[str, ...] = ("compute",) + PATTERNS
_CALIBRATION_FIELDS: tuple[str, ...] = ("device", "driver", "torch", "triton", "date", "method")
#: Every key a ``[calibration]`` table may hold (issue 23 item 7: any other is refused, naming it and
#: the file, since a dropped typo silently changes predictions). The micro-benchmark tables
#: (``*_bytes_s``, ``chain_n_s``, ...) are kept as measured records; the model reads the terms of
#: :mod:`aqua_model.hardware.calibrated_terms` and the library-kernel tables below.
CALIBRATION_KEYS: frozenset[str] = frozenset(
    {
        *_CALIBRATION_FIELDS,
        "identity",
        "base",
        "cuda",
        "launch_overhead_s",
        "dispatch_interval_s",
        "read_bytes_s",
        "copy_bytes_s",
        "strided_bytes_s",
        "gather_bytes_s",
        "matmul_n_flops_per_s",
        "topk_rows_length_k_s",
        "sm_count",
        "pattern_latency_s",
        "graph_launch_s",
        "graph_gap_s",
        "tiny_kernel_s",
        "chain_n_s",
        "graph_method",
        "calibration_spread",
        "stream_profiler",
        "softmax_length_bytes_s_efficiency",
        "attention_compute_efficiency",
        "library_kernels_method",
        "stream",
        "prologue_combine_s",
        "intervals",
        "forms",
    }
)
#: The largest measured scalar time a calibration may hold, in seconds: every micro-benchmark of
#: the suite times one call, and no single kernel call of it takes a second.
MAX_CALIBRATED_SCALAR_S = 1.0
#: Allowed range of the launch overhead (seconds): above a millisecond no GPU launches kernels.
LAUNCH_OVERHEAD_RANGE_S = (1e-9, 1e-3)
#: A calibrated profile's identity (``calibration.identity``): what its predictions' mode names.
IDENTITY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_TOP_LEVEL: frozenset[str] = frozenset(
    {
        "schema_version",
        "name",
        "vendor",
        "kind",
        "mode",
        "aliases",
        "notes",
        "efficiency",
        "calibration",
        "interconnect",
    }
    | set(_NUMBER_FIELDS)
)


@dataclass(frozen=True)
class Quantity:
    """One sourced number: ``value`` in the canonical ``unit``, as given in the file, and why."""

    value: float
    unit: str
    source: str
    given_value: float
    given_unit: str
    sparse: bool | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "value": self.value,
            "unit": self.unit,
            "source": self.source,
            "given_value": self.given_value,
            "given_unit": self.given_unit,
        }
        if self.sparse is not None:
            out["sparse"] = self.sparse
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class SizeTable:
    """Efficiency of one access pattern versus transfer size, interpolated in log(bytes)."""

    bytes_points: tuple[float, ...]
    fractions: tuple[float, ...]
    source: str

    def __call__(self, nbytes: np.ndarray) -> np.ndarray:
        """Efficiency at ``nbytes`` (array, > 0); constant beyond the first and last points."""
        return np.interp(np.log(nbytes), np.log(np.asarray(self.bytes_points)), np.asarray(self.fractions))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "points": [[b, f] for b, f in zip(self.bytes_points, self.fractions)],
            "x_unit": "bytes",
            "y_unit": "fraction",
            "source": self.source,
        }


@dataclass(frozen=True)
class TopkTable:
    """Measured time of ``torch.topk`` (k = 3/4 of the row) against rows and row length.

    Interpolated bilinearly in (log rows, log length) and held constant beyond the measured
    grid: a calibrated fixed cost, which a byte or FLOP roofline cannot see.
    """

    rows: tuple[float, ...]
    lengths: tuple[float, ...]
    seconds: tuple[tuple[float, ...], ...]  # seconds[i][j] at rows[i], lengths[j]

    @classmethod
    def from_points(cls, points: Any, where: str) -> TopkTable:
        """Build from [rows, length, k, seconds] points covering a full rows x length grid."""
        try:
            pts = [(float(r), float(n), float(sec)) for r, n, _k, sec in points]
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{where}: calibration.topk_rows_length_k_s must hold [rows, length, k, seconds] points"
            ) from exc
        rows, lengths = sorted({p[0] for p in pts}), sorted({p[1] for p in pts})
        grid = {(r, n): sec for r, n, sec in pts}
        missing = [(r, n) for r in rows for n in lengths if (r, n) not in grid]
        if missing or any(sec <= 0 for sec in grid.values()):
            raise ValueError(
                f"{where}: calibration.topk_rows_length_k_s must be a full grid of positive times; missing {missing}"
            )
        return cls(tuple(rows), tuple(lengths), tuple(tuple(grid[(r, n)] for n in lengths) for r in rows))

    def __call__(self, rows: Any, length: Any) -> np.ndarray:
        """Seconds of one top-k over ``rows`` rows of ``length`` (arrays broadcast)."""
        lr = np.log(np.asarray(self.rows))
        ln = np.log(np.asarray(self.lengths))
        table = np.log(np.asarray(self.seconds))
        x = np.clip(np.log(np.maximum(np.asarray(rows, dtype=float), 1.0)), lr[0], lr[-1])
        y = np.clip(np.log(np.maximum(np.asarray(length, dtype=float), 1.0)), ln[0], ln[-1])
        x, y = np.broadcast_arrays(x, y)
        # interpolate along length for every measured row count, then along rows
        along_len = np.stack([np.interp(y, ln, table[i]) for i in range(len(lr))], axis=-1)
        flat = along_len.reshape(-1, len(lr))
        out = np.array([np.interp(xi, lr, row) for xi, row in zip(x.reshape(-1), flat)]).reshape(x.shape)
        return np.exp(out)


@dataclass(frozen=True)
class LengthTable:
    """A measured efficiency of one library kernel against row length (softmax), interpolated
    in log(length) and held constant beyond the measured lengths."""

    lengths: tuple[float, ...]
    fractions: tuple[float, ...]

    @classmethod
    def from_points(cls, points: Any, field: str, where: str) -> LengthTable:
        """Build from [length, bytes, seconds, efficiency] points."""
        try:
            pts = sorted((float(p[0]), float(p[-1])) for p in points)
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(
                f"{where}: calibration.{field} must hold [length, bytes, seconds, efficiency] points"
            ) from exc
        if not pts or any(not (0 < f <= 1) for _, f in pts):
            raise ValueError(f"{where}: calibration.{field} needs efficiencies in (0, 1], got {pts}")
        return cls(tuple(n for n, _ in pts), tuple(f for _, f in pts))

    def __call__(self, length: Any) -> np.ndarray:
        """Efficiency at ``length`` (array)."""
        x = np.log(np.maximum(np.asarray(length, dtype=float), 1.0))
        return np.interp(x, np.log(np.asarray(self.lengths)), np.asarray(self.fractions))


@dataclass(frozen=True)
class HardwareProfile:
    """A device's sourced numbers; build it with :func:`load`, not by hand."""

    key: str
    name: str
    vendor: str
    kind: str
    mode: str
    path: str
    aliases: tuple[str, ...]
    notes: str | None
    quantities: Mapping[str, Quantity]
    efficiencies: Mapping[str, Quantity]
    size_tables: Mapping[str, SizeTable]
    calibration: Mapping[str, str] | None
    topk_table: TopkTable | None = None
    softmax_table: LengthTable | None = None
    attention_compute_efficiency: float | None = None
    interconnect: Interconnect | None = None  # [interconnect] table (aqua_model.hardware.interconnect)
    #: Calibrated model terms (graph timing, SM count, stream tables, intervals), issue 12.
    terms: CalibratedTerms = CalibratedTerms()

    def __hash__(self) -> int:
        return hash((self.key, self.path, self.mode))

    # -- the numbers the roofline uses --------------------------------------------------------
    def peak_flops(self, dtype: str) -> float:
        """Dense peak rate (FLOP/s, 2 FLOPs per multiply-add) for ``dtype``: bf16, fp16, fp32, tf32."""
        dtype = check_compute_dtype(dtype)
        field = f"peak_flops_{dtype}"
        if field not in self.quantities:
            have = [d for d in COMPUTE_DTYPES if f"peak_flops_{d}" in self.quantities]
            raise ValueError(f"dtype {dtype!r} has no peak rate in {self.path}; it quotes {', '.join(have)}")
        return self.quantities[field].value

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Datasheet device-memory bandwidth (bytes/s)."""
        return self.quantities["hbm_bandwidth_bytes_per_s"].value

    @property
    def memory_bytes(self) -> float:
        """Device memory capacity (bytes)."""
        return self.quantities["memory_bytes"].value

    @property
    def l2_bytes(self) -> float:
        """Last on-chip cache in front of device memory (bytes)."""
        return self.quantities["l2_bytes"].value

    @property
    def launch_overhead_s(self) -> float:
        """Fixed time added per kernel launch (s)."""
        return self.quantities["launch_overhead_s"].value

    @property
    def sector_bytes(self) -> int:
        """Smallest unit of device-memory traffic (bytes)."""
        return int(self.quantities["sector_bytes"].value)

    @property
    def compute_efficiency(self) -> float:
        """Fraction of the dense peak a well-shaped matrix kernel reaches."""
        return self.efficiencies["compute"].value

    def memory_efficiency(self, pattern: str, nbytes: Any) -> float | np.ndarray:
        """Fraction of datasheet bandwidth reached by a transfer of ``nbytes`` with ``pattern``.

        ``pattern`` is one of ``contiguous``, ``strided``, ``gather``; ``nbytes`` a positive
        number or array (any shape). Uses the pattern's size table when the profile has one,
        else the pattern's flat value. Returns a float for a scalar, an array otherwise.
        """
        pattern = check_choice("pattern", pattern, PATTERNS)
        arr = _positive_array("nbytes", nbytes)
        table = self.size_tables.get(pattern)
        if table is None:
            out = np.full(arr.shape, self.efficiencies[pattern].value, dtype=float)
        else:
            out = table(arr)
        return float(out) if out.ndim == 0 else out

    # -- provenance and display ---------------------------------------------------------------
    def source_of(self, field: str) -> str:
        """The source of ``field``: a number's name, ``efficiency.<name>`` or
        ``efficiency.size_table.<pattern>``."""
        if field in self.quantities:
            return self.quantities[field].source
        if field.startswith("efficiency.size_table."):
            pattern = field.removeprefix("efficiency.size_table.")
            if pattern in self.size_tables:
                return self.size_tables[pattern].source
        elif field.startswith("efficiency."):
            name = field.removeprefix("efficiency.")
            if name in self.efficiencies:
                return self.efficiencies[name].source
        known = sorted(self.quantities) + [f"efficiency.{k}" for k in self.efficiencies]
        known += [f"efficiency.size_table.{k}" for k in self.size_tables]
        raise ValueError(f"field {field!r} is not in profile {self.key!r}; known fields: {', '.join(known)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with every value, unit and source."""
        return {
            "schema_version": SCHEMA_VERSION,
            "key": self.key,
            "name": self.name,
            "vendor": self.vendor,
            "kind": self.kind,
            "mode": self.mode,
            "path": self.path,
            "aliases": list(self.aliases),
            "notes": self.notes,
            "fields": {k: q.to_dict() for k, q in self.quantities.items()},
            "efficiency": {k: q.to_dict() for k, q in self.efficiencies.items()},
            "size_tables": {k: t.to_dict() for k, t in self.size_tables.items()},
            "calibration": dict(self.calibration) if self.calibration is not None else None,
            "interconnect": self.interconnect.to_dict() if self.interconnect is not None else None,
        }

    def describe(self) -> str:
        """A readable table of the profile (for ``aqua-model hardware show``)."""
        lines = [
            f"{self.name} ({self.vendor}, {self.kind})  key: {self.key}  mode: {self.mode}",
            f"file: {self.path}",
        ]
        if self.aliases:
            lines.append(f"aliases: {', '.join(self.aliases)}")
        rows = [(k, _fmt_quantity(q), _flag(q), q.source, q.note) for k, q in self.quantities.items()]
        rows += [
            (f"efficiency.{k}", _fmt_quantity(q), "", q.source, q.note) for k, q in self.efficiencies.items()
        ]
        for k, t in self.size_tables.items():
            pts = ", ".join(f"{b:.3g} B: {f:.2f}" for b, f in zip(t.bytes_points, t.fractions))
            rows.append((f"efficiency.size_table.{k}", pts, "", t.source, None))
        if self.interconnect is not None:
            rows += [(f, _fmt_quantity(q), "", q.source, q.note) for f, q in self.interconnect.rows()]
        width = max(len(r[0]) for r in rows)
        vwidth = max(len(r[1]) for r in rows)
        lines.append(f"{'field':<{width}}  {'value':<{vwidth}}  {'':6}  source")
        for field, value, flag, source, note in rows:
            lines.append(f"{field:<{width}}  {value:<{vwidth}}  {flag:6}  {source}")
            if note:
                lines.append(f"{'':<{width}}  {'':<{vwidth}}  {'':6}  note: {note}")
        if self.calibration is not None:
            lines.append("calibration: " + "; ".join(f"{k}={v}" for k, v in self.calibration.items()))
        if self.interconnect is not None:
            ic = self.interconnect
            lines.append(f"interconnect: {ic.kind}" + (f" ({ic.note})" if ic.note else ""))
        if self.notes:
            lines.append(f"notes: {self.notes}")
        return "\n".join(lines)


def _fmt_quantity(q: Quantity) -> str:
    if q.unit == "fraction":
        return f"{q.value:.3f}"
    if q.given_unit == q.unit:
        return f"{q.given_value:g} {q.unit}"
    return f"{q.given_value:g} {q.given_unit} ({q.value:.4g} {q.unit})"


def _flag(q: Quantity) -> str:
    if q.sparse is None:
        return ""
    return "sparse" if q.sparse else "dense"


def _positive_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive number or array, got {value!r}")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a positive number or array, got {value!r}") from exc
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0, got min {arr.min()!r}")
    return arr


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def list_devices() -> list[str]:
    """Keys (file stems) of the shipped device files, sorted."""
    return sorted(p.stem for p in DATA_DIR.glob("*.toml"))


def aliases() -> dict[str, str]:
    """Every accepted short name (lower case) and the device key it stands for."""
    return dict(_alias_map())


def load(name_or_path: str | os.PathLike[str]) -> HardwareProfile:
    """Load a device by key or alias (case-insensitive), or any schema-following TOML by path.

    Raises ValueError for an unknown name (listing the known ones), a missing or malformed
    field (naming the file and the field), or a unit that does not fit the field.
    """
    if isinstance(name_or_path, os.PathLike):
        return _load_path(Path(name_or_path))
    if not isinstance(name_or_path, str):
        raise TypeError(f"name_or_path must be a device name or a path, got {name_or_path!r}")
    text = name_or_path.strip()
    if text.endswith(".toml") or os.sep in text or "/" in text:
        return _load_path(Path(text))
    key = text.lower()
    amap = _alias_map()
    if key in amap:
        key = amap[key]
    if key not in list_devices():
        known = ", ".join(list_devices())
        alias_text = ", ".join(f"{a}->{k}" for a, k in sorted(amap.items()))
        raise ValueError(
            f"gpu {name_or_path!r} is not a known device; known devices: {known} (aliases: {alias_text}); "
            "or pass the path of a TOML file that follows the hardware schema"
        )
    return _load_path(DATA_DIR / f"{key}.toml")


def resolve_profile(gpu: str | os.PathLike[str] | HardwareProfile) -> HardwareProfile:
    """A profile object as given, or a device name / profile path for :func:`load`."""
    if not isinstance(gpu, (str, os.PathLike, HardwareProfile)):  # before the cache, which hashes it
        raise TypeError(
            f"gpu must be a device name, a profile TOML path or a HardwareProfile, got {gpu!r:.60} of type "
            f"{type(gpu).__name__}"
        )
    return _resolve_profile(cast(Any, gpu))  # PathLike is hashable at run time; typeshed says not


@lru_cache(maxsize=1)
def _resolve_profile(gpu: str | os.PathLike[str] | HardwareProfile) -> HardwareProfile:
    return gpu if isinstance(gpu, HardwareProfile) else load(gpu)


def _alias_map() -> Mapping[str, str]:
    return alias_map(list_devices(), lambda key: _load_path(DATA_DIR / f"{key}.toml").aliases, "device")


def _load_path(path: Path) -> HardwareProfile:
    resolved = existing_file(path, "hardware")
    return _load_cached(str(resolved), resolved.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _load_cached(path_text: str, _mtime_ns: int) -> HardwareProfile:
    path = Path(path_text)
    return _parse(read_toml(path), path)


def _parse(raw: Mapping[str, Any], path: Path) -> HardwareProfile:
    where = str(path)
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_LEVEL))}"
        )
    version = _require(raw, "schema_version", where)
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise ValueError(f"{where}: schema_version must be {SCHEMA_VERSION}, got {version!r}")
    name = _require_str(raw, "name", where)
    vendor = _require_str(raw, "vendor", where)
    kind = _require_str(raw, "kind", where)
    if kind not in ("gpu", "cpu"):
        raise ValueError(f"{where}: field 'kind' must be 'gpu' or 'cpu', got {kind!r}")
    mode_raw = _require_str(raw, "mode", where)
    if mode_raw not in ("datasheet", "calibrated"):
        raise ValueError(f"{where}: field 'mode' must be 'datasheet' or 'calibrated', got {mode_raw!r}")
    alias_list = raw.get("aliases", [])
    if not isinstance(alias_list, list) or not all(isinstance(a, str) and a.strip() for a in alias_list):
        raise ValueError(f"{where}: field 'aliases' must be a list of non-empty strings, got {alias_list!r}")
    notes = raw.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise ValueError(f"{where}: field 'notes' must be a string, got {notes!r}")

    quantities: dict[str, Quantity] = {}
    for field, (dim, required) in _NUMBER_FIELDS.items():
        if field not in raw:
            if required:
                raise ValueError(f"{where}: missing required field {field!r}")
            continue
        is_peak = field.startswith("peak_flops_")
        q = _quantity(raw[field], field, dim, where, is_peak=is_peak)
        if is_peak and q.sparse != field.endswith("_sparse"):
            want = "true" if field.endswith("_sparse") else "false (dense peaks only)"
            raise ValueError(f"{where}: field {field!r} must have sparse = {want}, got {q.sparse}")
        quantities[field] = q
    lo_s, hi_s = LAUNCH_OVERHEAD_RANGE_S
    if not lo_s <= quantities["launch_overhead_s"].value <= hi_s:
        raise ValueError(
            f"{where}: field 'launch_overhead_s' is {quantities['launch_overhead_s'].value:g} s; allowed range "
            f"[{lo_s:g}, {hi_s:g}] s"
        )
    sector = quantities["sector_bytes"].value
    if sector != int(sector):
        raise ValueError(f"{where}: field 'sector_bytes' must be a whole number of bytes, got {sector!r}")

    eff_raw = _require(raw, "efficiency", where)
    if not isinstance(eff_raw, dict):
        raise ValueError(f"{where}: field 'efficiency' must be a table")
    allowed_eff = set(_EFFICIENCY_FIELDS) | {"size_table"}
    extra = sorted(set(eff_raw) - allowed_eff)
    if extra:
        raise ValueError(f"{where}: unknown field(s) efficiency.{', efficiency.'.join(extra)}")
    efficiencies: dict[str, Quantity] = {}
    for field in _EFFICIENCY_FIELDS:
        if field not in eff_raw:
            raise ValueError(f"{where}: missing required field 'efficiency.{field}'")
        q = _quantity(eff_raw[field], f"efficiency.{field}", "fraction", where, is_peak=False)
        if not 0.0 < q.value <= 1.0:
            raise ValueError(f"{where}: field 'efficiency.{field}' must be in (0, 1], got {q.value!r}")
        efficiencies[field] = q
    size_tables: dict[str, SizeTable] = {}
    tables_raw = eff_raw.get("size_table", {})
    if not isinstance(tables_raw, dict):
        raise ValueError(f"{where}: field 'efficiency.size_table' must be a table of patterns")
    for pattern, table in tables_raw.items():
        if pattern not in PATTERNS:
            raise ValueError(
                f"{where}: efficiency.size_table.{pattern} names no access pattern; allowed: {', '.join(PATTERNS)}"
            )
        size_tables[pattern] = _size_table(table, f"efficiency.size_table.{pattern}", where)

    calibration: dict[str, str] | None = None
    topk_table: TopkTable | None = None
    softmax_table: LengthTable | None = None
    attention_eff: float | None = None
    terms = CalibratedTerms()
    if mode_raw == "calibrated":
        cal = _require(raw, "calibration", where)
        if not isinstance(cal, dict):
            raise ValueError(f"{where}: field 'calibration' must be a table")
        unknown_cal = sorted(set(cal) - CALIBRATION_KEYS)
        if unknown_cal:
            raise ValueError(
                f"{where}: unknown key(s) in [calibration]: {', '.join(unknown_cal)}; allowed: "
                f"{', '.join(sorted(CALIBRATION_KEYS))}"
            )
        calibration = {}
        for field in _CALIBRATION_FIELDS:
            calibration[field] = _require_str(cal, field, where, prefix="calibration.")
        calibration["base"] = _calibration_base(cal, where)
        identity = _require_str(cal, "identity", where, prefix="calibration.")
        if not set(identity) <= IDENTITY_CHARS:
            raise ValueError(
                f"{where}: field 'calibration.identity' must use lower-case letters, digits and -_. only, "
                f"got {identity!r}"
            )
        for (
            field,
            value,
        ) in cal.items():  # measured scalars in seconds: launch_overhead_s, dispatch_interval_s, ...
            if (
                field.endswith("_s")
                and not isinstance(value, (list, dict))
                and (
                    isinstance(value, bool)
                    or not isinstance(value, numbers.Real)
                    or not math.isfinite(value)
                    or cast(float, value) <= 0
                    or cast(float, value) > MAX_CALIBRATED_SCALAR_S
                )
            ):
                raise ValueError(
                    f"{where}: field 'calibration.{field}' must be a finite number of seconds > 0 and at "
                    f"most {MAX_CALIBRATED_SCALAR_S:g}, got {value!r}"
                )
        if "topk_rows_length_k_s" in cal:
            topk_table = TopkTable.from_points(cal["topk_rows_length_k_s"], where)
        if "softmax_length_bytes_s_efficiency" in cal:
            softmax_table = LengthTable.from_points(
                cal["softmax_length_bytes_s_efficiency"], "softmax_length_bytes_s_efficiency", where
            )
        if "attention_compute_efficiency" in cal:
            attention_eff = cal["attention_compute_efficiency"]
            if (
                isinstance(attention_eff, bool)
                or not isinstance(attention_eff, numbers.Real)
                or not 0 < cast(float, attention_eff) <= 1
            ):
                raise ValueError(
                    f"{where}: calibration.attention_compute_efficiency must be in (0, 1], got {attention_eff}"
                )
        terms = parse_calibrated_terms(cal, where)
        mode = f"calibrated:{identity}"
    else:
        if "calibration" in raw:
            raise ValueError(
                f"{where}: a [calibration] table needs mode = 'calibrated', got mode = {mode_raw!r}"
            )
        mode = "datasheet"

    return HardwareProfile(
        key=path.stem.lower(),
        name=name,
        vendor=vendor,
        kind=kind,
        mode=mode,
        path=where,
        aliases=tuple(a.lower() for a in alias_list),
        notes=notes,
        quantities=MappingProxyType(quantities),
        efficiencies=MappingProxyType(efficiencies),
        size_tables=MappingProxyType(size_tables),
        calibration=MappingProxyType(calibration) if calibration is not None else None,
        topk_table=topk_table,
        softmax_table=softmax_table,
        attention_compute_efficiency=attention_eff,
        interconnect=parse_interconnect(
            raw["interconnect"], where, lambda e, f, dim: _quantity(e, f, dim, where, is_peak=False)
        )
        if "interconnect" in raw
        else None,
        terms=terms,
    )


def _calibration_base(cal: Mapping[str, Any], where: str) -> str:
    """``calibration.base``: the datasheet profile a calibrated one was built on, a shipped
    device (key or alias) or the path of a profile TOML."""
    base = _require_str(cal, "base", where, prefix="calibration.")
    known = base.strip().lower() in set(list_devices()) | set(_alias_map())
    if not known and not (base.endswith(".toml") and Path(base).expanduser().is_file()):
        raise ValueError(
            f"{where}: field 'calibration.base' is {base!r}, which names no datasheet profile; known devices: "
            f"{', '.join(list_devices())} (or the path of a profile TOML)"
        )
    return base


def _require(raw: Mapping[str, Any], field: str, where: str, prefix: str = "") -> Any:
    if field not in raw:
        raise ValueError(f"{where}: missing required field {prefix + field!r}")
    return raw[field]


def _require_str(raw: Mapping[str, Any], field: str, where: str, prefix: str = "") -> str:
    value = _require(raw, field, where, prefix)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {prefix + field!r} must be a non-empty string, got {value!r}")
    return value


def _check_source(source: Any, field: str, where: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{where}: field {field!r} needs a non-empty 'source'")
    if not source.startswith(SOURCE_PREFIXES):
        raise ValueError(
            f"{where}: field {field!r} has source {source[:40]!r}...; a source must start with one of "
            f"{', '.join(SOURCE_PREFIXES)}"
        )
    return source


def _quantity(entry: Any, field: str, dim: str, where: str, *, is_peak: bool) -> Quantity:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: field {field!r} must be a table {{value, unit, source}}, got {entry!r}")
    allowed = {"value", "unit", "source", "note"} | ({"sparse"} if is_peak else set())
    extra = sorted(set(entry) - allowed)
    if extra:
        raise ValueError(
            f"{where}: field {field!r} has unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}"
        )
    for key in ("value", "unit", "source") + (("sparse",) if is_peak else ()):
        if key not in entry:
            raise ValueError(f"{where}: field {field!r} is missing {key!r}")
    value = entry["value"]
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{where}: field {field!r} must have a finite value > 0, got {value!r}")
    unit = entry["unit"]
    units = _UNITS[dim]
    if unit not in units:
        raise ValueError(f"{where}: field {field!r} has unit {unit!r}; allowed units: {', '.join(units)}")
    source = _check_source(entry["source"], field, where)
    sparse = entry.get("sparse")
    if is_peak and not isinstance(sparse, bool):
        raise ValueError(f"{where}: field {field!r} must have sparse = true or false, got {sparse!r}")
    note = entry.get("note")
    if note is not None and not isinstance(note, str):
        raise ValueError(f"{where}: field {field!r} has a non-string note")
    canonical = next(iter(units))
    return Quantity(
        value=float(value) * units[unit],
        unit=canonical,
        source=source,
        given_value=float(value),
        given_unit=unit,
        sparse=sparse if is_peak else None,
        note=note,
    )


def _size_table(entry: Any, field: str, where: str) -> SizeTable:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: field {field!r} must be a table with points, x_unit, y_unit, source")
    for key in ("points", "x_unit", "y_unit", "source"):
        if key not in entry:
            raise ValueError(f"{where}: field {field!r} is missing {key!r}")
    if entry["x_unit"] != "bytes" or entry["y_unit"] != "fraction":
        raise ValueError(
            f"{where}: field {field!r} must have x_unit = 'bytes' and y_unit = 'fraction', "
            f"got {entry['x_unit']!r}, {entry['y_unit']!r}"
        )
    points = entry["points"]
    ok = isinstance(points, list) and len(points) >= 2
    ok = ok and all(
        isinstance(p, list)
        and len(p) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in p)
        for p in points
    )
    if not ok:
        raise ValueError(
            f"{where}: field {field!r} needs points = [[bytes, fraction], ...] with at least two points"
        )
    xs = tuple(float(p[0]) for p in points)
    ys = tuple(float(p[1]) for p in points)
    if any(x <= 0 for x in xs) or any(b <= a for a, b in zip(xs, xs[1:])):
        raise ValueError(f"{where}: field {field!r} needs bytes > 0 and strictly increasing, got {list(xs)}")
    if any(not 0.0 < y <= 1.0 for y in ys):
        raise ValueError(f"{where}: field {field!r} needs fractions in (0, 1], got {list(ys)}")
    return SizeTable(bytes_points=xs, fractions=ys, source=_check_source(entry["source"], field, where))
