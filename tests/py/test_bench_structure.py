"""bench/structure.py: layer counts read from kiln.inspect, shuffles split into copies and
aliased reshapes, and errors against a reference."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kiln

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import structure  # noqa: E402  (bench/structure.py)


class ConvThenPermutedLinear(nn.Module):
    """A convolution, a permute that copies, a flatten that reshapes, a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.linear = nn.Linear(4 * 5 * 5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)).permute(0, 2, 3, 1)
        return self.linear(y.reshape(y.shape[0], -1))


def test_counts_come_from_the_engine_and_leave_weights_out():
    model = ConvThenPermutedLinear().eval()
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        compiled = kiln.compile(model, ir="dynamo", inputs=[x], device="cpu")
    counts = structure.layer_counts(kiln.inspect(compiled))
    assert "Constant" not in counts
    assert counts["Convolution"] == 1
    assert counts["FullyConnected"] == 1
    assert counts["Shuffle (copy)"] >= 1  # the permute


def test_shuffles_that_only_reshape_are_told_from_copies():
    text = "\n".join([
        "layers:",
        "  0 w: Constant(weights=float16[8])  () -> (c: float16 [8])",
        "  1 r: Shuffle(firstPermutation=[], hasReshape=true, reshapeDims=[2, 4], "
        "secondPermutation=[], reshapeReferences=[])  (x) -> (y: float16 [2, 4])",
        "  2 t: Shuffle(firstPermutation=[1, 0], hasReshape=false, reshapeDims=[], "
        "secondPermutation=[], reshapeReferences=[])  (y) -> (z: float16 [4, 2])",
        "  3 s: Softmax(axis=1, log=false)  (z) -> (o: float16 [4, 2])",
    ])
    assert structure.layer_counts(text) == {"Shuffle (reshape)": 1, "Shuffle (copy)": 1,
                                            "Softmax": 1}


def test_errors_are_relative_to_the_reference():
    expected = torch.tensor([1.0, -2.0, 4.0])
    max_error, l2 = structure.relative_errors(expected + torch.tensor([0.0, 0.4, 0.0]), expected)
    assert max_error == pytest.approx(0.1)
    assert l2 == pytest.approx(0.4 / expected.norm().item())


def test_the_table_has_a_row_a_model():
    rows = [{"model": "a", "layers": structure.layer_counts(""), "ops_in_torch": 0},
            {"model": "b", "layers": structure.layer_counts(""), "ops_in_torch": 1,
             "max_error": 1e-3, "rel_l2": 2e-3}]
    table = structure.markdown(rows).splitlines()
    assert len(table) == 4
    assert table[2].startswith("| a | 0 | 0 |") and table[2].endswith("| - | - |")
    assert table[3].endswith("| 1.00e-03 | 2.00e-03 |")
