"""The result tables of docs/results are the comparisons behind them, judged by today's statistics."""

import json
import shutil

from cifar_dcgan.compare.tables import main
from conftest import REPO

RESULTS = REPO / "docs" / "results"


def test_every_result_table_is_generated_from_its_comparison_json(capsys):
    pages = sorted(RESULTS.glob("*.md"))
    assert main(["--check", *map(str, pages)]) == 0, capsys.readouterr().out
    tables = sum(page.read_text().count("<!-- table: ") for page in pages)
    assert tables >= 4  # label smoothing, stabilizers, the two precision sweeps


def test_a_table_typed_by_hand_or_a_changed_run_is_caught_and_rebuilt(tmp_path, capsys):
    for name in ("stabilizers.md", "stabilizers_comparison.json"):
        shutil.copy(RESULTS / name, tmp_path / name)
    page = tmp_path / "stabilizers.md"
    original = page.read_text()
    page.write_text(original.replace("| 29.2, 38.9, 29.4 |", "| 29.2, 38.9, 29.5 |", 1))
    assert main(["--check", str(page)]) == 1
    assert "stabilizers.md: differs from what its comparison.json gives" in capsys.readouterr().out
    assert main([str(page)]) == 0 and page.read_text() == original
    # a run's number changes in the JSON: the table, its verdict and its plan follow
    data = json.loads((tmp_path / "stabilizers_comparison.json").read_text())
    data["groups"][0]["runs"][0]["best_fcd"] = 60.0
    (tmp_path / "stabilizers_comparison.json").write_text(json.dumps(data))
    assert main(["--check", str(page)]) == 1
    main([str(page)])
    assert "| 60.0, 38.9, 29.4 |" in page.read_text()
