"""The link between devices of one node, as data: the ``[interconnect]`` table of a hardware file.

What tensor and pipeline parallelism need to time their collectives
(:mod:`aqua_model.costs.collectives`): how many devices one node links, the bandwidth per device
and direction, the latency of one step and of one collective call, and the fraction of that
bandwidth a collective reaches. Every number is a ``{value, unit, source}`` table like the rest
of the file (parsed by :mod:`.profile`, so units and sources follow its rules)::

    [interconnect]
    kind = "nvlink"                 # nvlink | infinity-fabric | pcie | shared-memory
    note = "..."                    # optional
    devices_per_node = { value = 8, unit = "count", source = "..." }
    link_bandwidth_bytes_per_s = { value = 450, unit = "GB/s", source = "..." }   # per direction
    step_latency_s = { value = 0.47, unit = "us", source = "..." }
    fixed_latency_s = { value = 3.6, unit = "us", source = "..." }
    efficiency = { value = 0.80, unit = "fraction", source = "..." }

Bandwidth is per device and per direction (NVIDIA quotes the sum of both directions: 900 GB/s
on an H100 is 450 GB/s each way). A parallel prediction on a profile without this table raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

#: Kinds of link a node may use between its devices.
KINDS: tuple[str, ...] = ("nvlink", "infinity-fabric", "pcie", "shared-memory")
#: number field -> unit dimension (as :mod:`.profile` names them); every one is required.
FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "devices_per_node": "count",
        "link_bandwidth_bytes_per_s": "bytes/s",
        "step_latency_s": "s",
        "fixed_latency_s": "s",
        "efficiency": "fraction",
    }
)


@dataclass(frozen=True)
class Interconnect:
    """A node's device-to-device link; build it from a hardware file, not by hand."""

    kind: str
    note: str | None
    quantities: Mapping[str, Any]  # field -> profile.Quantity (value in the canonical unit, source)

    @property
    def devices_per_node(self) -> int:
        """Devices one node links with this interconnect (the largest t * p on one node)."""
        return int(self.quantities["devices_per_node"].value)

    @property
    def link_bandwidth_bytes_per_s(self) -> float:
        """Datasheet bandwidth per device and direction (bytes/s)."""
        return self.quantities["link_bandwidth_bytes_per_s"].value

    @property
    def step_latency_s(self) -> float:
        """Latency of one step of a collective, one message across one link (s)."""
        return self.quantities["step_latency_s"].value

    @property
    def fixed_latency_s(self) -> float:
        """Fixed latency of one collective call (s)."""
        return self.quantities["fixed_latency_s"].value

    @property
    def efficiency(self) -> float:
        """Fraction of the datasheet link bandwidth a large collective reaches."""
        return self.quantities["efficiency"].value

    @property
    def achieved_bandwidth_bytes_per_s(self) -> float:
        """beta of the collective model: datasheet bandwidth times efficiency (bytes/s)."""
        return self.link_bandwidth_bytes_per_s * self.efficiency

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with every value, unit and source."""
        return {
            "kind": self.kind,
            "note": self.note,
            "fields": {k: q.to_dict() for k, q in self.quantities.items()},
        }

    def rows(self) -> list[tuple[str, Any]]:
        """(field name, Quantity) pairs for a profile's printed table."""
        return [(f"interconnect.{k}", q) for k, q in self.quantities.items()]


def parse(raw: Any, where: str, number: Callable[[Any, str, str], Any]) -> Interconnect:
    """The ``[interconnect]`` table of the file ``where``; ``number(entry, field, dimension)``
    parses one ``{value, unit, source}`` entry (the profile's own parser). Raises ValueError
    naming the file and the field."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: field 'interconnect' must be a table")
    allowed = {"kind", "note"} | set(FIELDS)
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(
            f"{where}: unknown field(s) interconnect.{', interconnect.'.join(extra)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ValueError(
            f"{where}: field 'interconnect.kind' must be one of {', '.join(KINDS)}, got {kind!r}"
        )
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise ValueError(f"{where}: field 'interconnect.note' must be a string, got {note!r}")
    quantities: dict[str, Any] = {}
    for field, dim in FIELDS.items():
        if field not in raw:
            raise ValueError(f"{where}: missing required field 'interconnect.{field}'")
        quantities[field] = number(raw[field], f"interconnect.{field}", dim)
    devices = quantities["devices_per_node"].value
    if devices != int(devices):
        raise ValueError(
            f"{where}: field 'interconnect.devices_per_node' must be a whole number, got {devices!r}"
        )
    if not 0.0 < quantities["efficiency"].value <= 1.0:
        raise ValueError(
            f"{where}: field 'interconnect.efficiency' must be in (0, 1], got {quantities['efficiency'].value!r}"
        )
    return Interconnect(kind, note, MappingProxyType(quantities))
