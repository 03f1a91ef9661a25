"""Hardware database: one sourced TOML file per device, and its loader.

>>> from aqua_model import hardware
>>> gpu = hardware.load("h200")            # key, alias, or path to any schema-following TOML
>>> gpu.peak_flops("bf16"), gpu.bandwidth_bytes_per_s, gpu.mode
"""

from aqua_model.hardware.profile import (
    DATA_DIR,
    PATTERNS,
    SCHEMA_VERSION,
    HardwareProfile,
    Quantity,
    SizeTable,
    aliases,
    list_devices,
    load,
    resolve_profile,
)

__all__ = [
    "DATA_DIR",
    "PATTERNS",
    "SCHEMA_VERSION",
    "HardwareProfile",
    "Quantity",
    "SizeTable",
    "aliases",
    "list_devices",
    "load",
    "resolve_profile",
]
