"""Whole models through every front end: kiln.compile(ir="ts"), kiln.compile(ir="dynamo") and
torch.compile(backend="kiln") match eager float32."""

import logging
import re
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import kiln

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import models  # noqa: E402  (examples/models.py)

FRONT_ENDS = ["ts", "dynamo", "torch.compile"]


def max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual - expected).abs().max().item() / expected.abs().max().item()


def compile_with(front_end: str, model: torch.nn.Module, example: torch.Tensor, **settings):
    if front_end == "torch.compile":
        torch._dynamo.reset()
        return torch.compile(model, backend="kiln", options=settings)
    return kiln.compile(model, ir=front_end, inputs=[kiln.Input.from_tensor(example)], **settings)


def run_and_check(front_end: str, model: torch.nn.Module, example: torch.Tensor, caplog) -> dict:
    """Compiles, checks the output against eager and returns what Kiln reported."""
    with caplog.at_level(logging.INFO, logger="kiln"), torch.no_grad():
        compiled = compile_with(front_end, model, example)
        actual = compiled(example)
        expected = model(example)
    assert max_relative_error(actual, expected) <= 1e-4
    if front_end != "torch.compile":
        return kiln.summary(compiled)
    summaries = [
        re.search(r"(\d+) op\(s\) in (\d+) engine\(s\), (\d+) op\(s\) left to PyTorch", r.getMessage())
        for r in caplog.records
    ]
    found = [m for m in summaries if m]
    assert found, "torch.compile(backend='kiln') logged no compile summary"
    torch._dynamo.reset()
    return {
        "ops_in_kiln": sum(int(m.group(1)) for m in found),
        "engines": sum(int(m.group(2)) for m in found),
        "ops_in_torch": sum(int(m.group(3)) for m in found),
    }


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_resnet18(front_end, caplog):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    example = torch.randn(1, 3, 224, 224)
    summary = run_and_check(front_end, model, example, caplog)
    assert summary["ops_in_torch"] == 0
    assert summary["engines"] == 1


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_small_resnet(front_end, caplog):
    torch.manual_seed(0)
    model = models.SmallResNet().eval()
    example = torch.randn(2, 3, 64, 64)
    summary = run_and_check(front_end, model, example, caplog)
    assert summary["engines"] >= 1


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_small_transformer_encoder(front_end, attention, caplog):
    torch.manual_seed(0)
    model = models.SmallTransformerEncoder(attention=attention).eval()
    example = torch.randn(2, 16, model.d_model)
    summary = run_and_check(front_end, model, example, caplog)
    assert summary["engines"] >= 1


class RankBranches(torch.nn.Module):
    """Branches on the rank of an intermediate and builds a list in a loop over it, as scripted
    library code does (F.interpolate): the TorchScript front end folds both for the input ranks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        if y.dim() == 4:
            y = y * 2.0
        else:
            y = y + 1.0
        sizes = [y.size(i + 2) * 2 for i in range(y.dim() - 2)]
        return torch.nn.functional.interpolate(y, size=sizes, mode="bilinear")


def test_torchscript_folds_rank_checks():
    model = RankBranches().eval()
    example = torch.randn(1, 3, 5, 6)
    with torch.no_grad():
        compiled = kiln.compile(
            model, ir="ts", inputs=[example], require_full_compilation=True, min_block_size=1
        )
        assert kiln.summary(compiled)["ops_in_torch"] == 0
        assert max_relative_error(compiled(example), model(example)) <= 1e-5


@pytest.fixture
def torchscript_fuses_on_cpu():
    """TorchScript's profiling executor with its CPU fuser on, as its GPU fuser is by default."""
    saved = torch._C._jit_can_fuse_on_cpu()
    torch._C._jit_override_can_fuse_on_cpu(True)
    try:
        yield
    finally:
        torch._C._jit_override_can_fuse_on_cpu(saved)


def test_torchscript_example_runs_do_not_invoke_torchscript_fusers(torchscript_fuses_on_cpu):
    # ir="ts" runs the graph on example inputs (shapes, ranks). Through the profiling executor
    # its second run compiled a fusion kernel per fusion group: on a GPU, minutes for DenseNet's
    # cat + batch norm + ReLU groups; on the CPU, here, an error without TorchScript's LLVM.
    model = RankBranches().eval()
    example = torch.randn(1, 3, 5, 6)
    with torch.no_grad():
        compiled = kiln.compile(
            model, ir="ts", inputs=[example], require_full_compilation=True, min_block_size=1
        )
        assert max_relative_error(compiled(example), model(example)) <= 1e-5


class RepeatedWork(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(x) * 2.0
        b = torch.relu(x) * 2.0
        return torch.tanh(a + b)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_repeated_computations_are_converted_once(front_end, caplog):
    # relu, mul, add and tanh: the second relu * 2 is the first one's value. (TorchScript's
    # freezing merges them for ir="ts"; kiln.fx_cse for the FX front ends.)
    summary = run_and_check(front_end, RepeatedWork().eval(), torch.randn(2, 5), caplog)
    assert summary["ops_in_kiln"] == 4


class TwoDraws(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x) - torch.rand_like(x)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_random_draws_are_not_merged(front_end):
    example = torch.zeros(4, 64)
    with torch.no_grad():
        compiled = compile_with(front_end, TwoDraws().eval(), example, min_block_size=1)
        # Merged draws would cancel: x + r - r == x exactly.
        assert not torch.equal(compiled(example), example)
