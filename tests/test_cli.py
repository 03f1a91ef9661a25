"""The command line: tables, JSON with a schema version, one-line errors."""

import json

import pytest

from aqua_model.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_breakeven_json(capsys):
    code, out, _ = run(capsys, "breakeven", "--d", "128", "--k", "96", "--json")
    data = json.loads(out)
    assert code == 0 and data["schema_version"] == 1
    assert data["breakeven"]["n_min"] == 1039


def test_breakeven_text_prefill_gqa(capsys):
    code, out, _ = run(capsys, "breakeven", "--k", "96", "--g", "4", "--phase", "prefill")
    assert code == 0 and "prefill" in out and "LaTeX" in out


def test_costs_table_and_json(capsys):
    code, out, _ = run(capsys, "costs", "--d", "128", "--k", "96", "--context", "4096")
    assert code == 0 and "scores per query head" in out and "2*N*k" in out
    code, out, _ = run(capsys, "costs", "--k", "32", "--json")
    data = json.loads(out)
    rows = {r["quantity"]: r for r in data["rows"]}
    assert rows["scores per query head"]["aqua"] == 2 * 4096 * 32


def test_report_has_breakeven_table_and_breakdown(capsys):
    code, out, _ = run(capsys, "report")
    assert code == 0
    assert "1038" in out and "1039" in out and "q_proj" in out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["breakeven", "--k", "200"], "k must be <= d"),
        (["breakeven", "--g", "0"], "g must be >= 1"),
        (["costs", "--context", "0"], "context must be >= 1"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(capsys, argv, fragment):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
