"""bench/restarts.py on crops: K restarts cost K times the tile-iterations of one, and each
K's gain over the first is counted crop for crop, with the guard's hand-backs."""

import json
import subprocess
import sys

from conftest import REPO


def test_restarts_bench_counts_cost_and_gain_crop_for_crop(tiny_export, tmp_path):
    out = tmp_path / "restarts.json"
    args = ["--export", str(tiny_export), "--n", "2", "--k", "1,2", "--tasks", "noise25", "--threads", "1"]
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "restarts.py"), *args, "--json", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["tasks"]["noise25"]
    one, two = rows["1"], rows["2"]
    assert two["tile_iterations"] > 1.5 * one["tile_iterations"]  # both restarts ran, batched
    assert two["input"] == one["input"]  # the same damaged crops
    assert two["gain"]["of"] == 2 and abs(two["gain"]["gain_db"] - (two["restored"] - one["restored"])) < 2e-3
    assert "gain" not in one and isinstance(one["handed_back"], float)
