"""`aqua-model breakeven --selection-tile M`: the tile-shared prefill break-even from the command line."""

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
