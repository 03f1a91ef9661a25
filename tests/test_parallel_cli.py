"""``aqua-model simulate --tp T --pp P``: the parallel latency parts on the command line."""

from __future__ import annotations

import json

import pytest

from aqua_model.cli import main
from aqua_model.simulator import end_to_end

ARGS = ["simulate", "--model", "llama-3.1-70b", "--context", "32768", "--batch", "8", "--k", "32"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tp_json_carries_the_parts_and_the_layout(capsys):
    code, out, _ = run(capsys, *ARGS, "--tp", "4", "--pp", "2", "--all-reduce", "tree", "--json")
    assert code == 0
    e = json.loads(out)["end_to_end"]
    ref = end_to_end(
        gpu="h200",
        model="llama-3.1-70b",
        context=32768,
        batch=8,
        k=32,
        tensor_parallel=4,
        pipeline_parallel=2,
        all_reduce="tree",
    )
    assert e["all_reduce_s"] == pytest.approx(float(ref.all_reduce_s)) and e["all_reduce_s"] > 0
    assert e["point_to_point_s"] == pytest.approx(float(ref.point_to_point_s)) and e["point_to_point_s"] > 0
    assert e["dense_s"] == pytest.approx(
        e["weights_s"] + e["dense_attention_s"] + e["all_reduce_s"] + e["point_to_point_s"]
    )
    lay = e["parallel"]["layout"]
    assert (lay["tensor_parallel"], lay["pipeline_parallel"], lay["devices"], lay["stage_layers"]) == (
        4,
        2,
        8,
        [40, 40],
    )
    assert (
        e["parallel"]["all_reduce"] == "tree"
        and e["parallel"]["memory_bytes_per_gpu"] < e["parallel"]["device_memory_bytes"]
    )


def test_tp_text_names_the_layout(capsys):
    code, out, _ = run(capsys, *ARGS, "--tp", "8")
    assert code == 0
    assert "TP8 x PP1 (8 GPUs" in out and "8 query / 1 KV heads per GPU" in out and "all-reduce" in out


def test_without_tp_a_model_too_large_for_one_gpu_gets_a_note(capsys):
    # 141.1 GB of weights + 85.9 GB of KV (80 x 8 x 2 x 32768 x 128 x 2 B x 8) > 141 GB
    code, out, _ = run(capsys, *ARGS)
    assert code == 0 and "smallest --tp that fits: 2" in out
    code, out, _ = run(capsys, *ARGS, "--json")
    assert json.loads(out)["end_to_end"]["one_gpu_fit"] == {
        "fits": False,
        "memory_bytes": pytest.approx(227.0e9, rel=1e-3),
        "device_memory_bytes": 141e9,
        "smallest_tensor_parallel": 2,
    }


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--tp", "1"], "smallest tensor_parallel that fits"),
        (["--tp", "3"], "must divide the 64 query heads"),
        (["--tp", "8", "--pp", "2"], "exceeds the 8 devices"),
        (["--all-reduce", "mesh"], "invalid choice"),
    ],
)
def test_bad_layout_exits_2_with_one_line(capsys, extra, fragment):
    with pytest.raises(SystemExit) as exc:
        code = main([*ARGS, *extra])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_tp_needs_a_model(capsys):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(
            main(
                [
                    "simulate",
                    "--heads-q",
                    "8",
                    "--heads-kv",
                    "8",
                    "--d",
                    "128",
                    "--context",
                    "1024",
                    "--k",
                    "32",
                    "--tp",
                    "2",
                ]
            )
        )
    assert exc.value.code == 2 and "--tp/--pp need --model" in capsys.readouterr().err
