"""Break-even output of the command line: the tile-shared prefill flag and the convention behind the FLOP break-even."""

from __future__ import annotations

import json

from aqua_model.cli import main


def test_tile_shared_prefill_breakeven_from_the_cli(capsys) -> None:
    assert main(["breakeven", "--phase", "prefill", "--selection-tile", "128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["breakeven"]
    # T* = d (2d + 2d/g + 2 + (log2 d - 2)/M) / (d - k) - 1 at d = 128, k = 96, g = 1, M = 128:
    # 128 (256 + 256 + 2 + 5/128) / 32 - 1 = 2056.15625 - 1
    assert out["n_star"] == 2055.15625 and out["selection_tile"] == 128


def test_selection_tile_in_decode_is_refused_naming_the_flag(capsys) -> None:
    assert main(["breakeven", "--selection-tile", "16"]) == 2
    err = capsys.readouterr().err
    assert "--selection-tile" in err and "prefill" in err


def test_simulate_says_which_convention_sets_its_flop_breakeven(capsys) -> None:
    """The FLOP break-even follows the convention (rotation counted or folded), not the plan: the
    rotation-free aqua-fused plan prints the same N* as the step, so the output says which is counted."""
    base = [
        "simulate",
        "--gpu",
        "h200",
        "--model",
        "llama-3.1-8b",
        "--context",
        "32768",
        "--batch",
        "8",
        "--k",
        "32",
        "--plan",
        "fused",
    ]
    assert main(base) == 0
    assert "[--projection online: rotating q and the new key counted;" in capsys.readouterr().out
    assert main([*base, "--projection", "folded"]) == 0
    assert "[--projection folded: the rotation folded into the weights;" in capsys.readouterr().out
