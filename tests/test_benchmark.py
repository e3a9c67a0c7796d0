"""The benchmark script runs end to end on tiny CPU sizes and prints a table of measured figures."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_quick_benchmark_prints_one_row_per_preset_and_setting(tmp_path):
    out = tmp_path / "rows.json"
    settings = "fp32,bf16-cl-merge4,bf16-cl,bf16-cl-regcompute"
    result = subprocess.run([sys.executable, "-m", "fullbatch.benchmark", "--quick", "--presets", "fbclip,gradreg",
                             "--settings", settings, "--json", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["preset"], r["setting"]) for r in rows] == [  # gradreg cannot merge; fbclip has no regularizer
        ("fbclip", "fp32"), ("fbclip", "bf16-cl-merge4"), ("fbclip", "bf16-cl"),
        ("gradreg", "fp32"), ("gradreg", "bf16-cl"), ("gradreg", "bf16-cl-regcompute")]
    for row in rows:
        assert row["seconds_per_step"] > 0 and row["tflops"] > 0 and row["images_per_second"] > 0
    assert rows[1]["merge"] == 4 and rows[3]["merge"] == 1
    # forward differences cost one extra forward+backward per block: about twice the FLOPs of a plain step;
    # under bf16 the full-precision regularizer also re-evaluates the unshifted gradient: about three times
    flops = [row["tflops"] * row["seconds_per_step"] for row in rows]
    assert 1.9 < flops[3] / flops[0] < 2.3
    assert 2.8 < flops[4] / flops[2] < 3.3 and 1.9 < flops[5] / flops[2] < 2.3
    assert "seconds_per_step" in result.stdout and "images_per_second" in result.stdout
    assert result.stdout.count("seconds_per_step") == 1  # the table once, not row by row and again
    assert all(0 <= row["spread"] for row in rows) and " spread " in result.stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("measured ")]
    assert len(progress) == 6 and progress[-1].split(" | ")[1] == "6/6"
