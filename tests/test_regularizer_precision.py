"""The regularizer-precision measurement: its rounding model and its table on a tiny network."""
import torch

from fullbatch.analysis import regularizer_precision


def test_mantissa_rounding_matches_torch_bfloat16():
    values = torch.randn(100_000) * torch.logspace(-6, 3, 100_000)
    rounded = regularizer_precision.round_mantissa(values, 7)
    assert torch.equal(rounded, values.to(torch.bfloat16).float())
    assert torch.equal(regularizer_precision.round_mantissa(values, 23), values)  # nothing dropped


def test_full_precision_beats_compute_precision_under_bf16_on_a_tiny_resnet(capsys):
    result = regularizer_precision.main(["--model", "resnet20", "--width", "8", "--block", "16", "--device", "cpu"])
    rows = {(row["training_pass"], row["precision"]): row for row in result["rows"]}
    assert rows["float32", "full"]["error"] < 0.05 and rows["float32", "full"]["cosine"] > 0.99
    assert rows["float32", "compute"]["error"] == rows["float32", "full"]["error"]  # no TF32 on the CPU
    assert rows["bf16", "full"]["error"] < rows["bf16", "compute"]["error"]
    assert rows["bf16", "full"]["cosine"] > rows["bf16", "compute"]["cosine"]
    tf32_moved, tf32_error = result["shifts"]["TF32"]
    bf16_moved, bf16_error = result["shifts"]["bf16"]
    assert 0 < bf16_moved < tf32_moved < 1 and tf32_error < bf16_error
    assert "| bf16 | full |" in capsys.readouterr().out
