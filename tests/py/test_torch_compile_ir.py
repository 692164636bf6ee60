"""kiln.compile(ir="torch_compile"), and ir="default" falling back to it when torch.export cannot
capture a module whole (data-dependent control flow, as in transformers' BART encoder in fp16)."""

import logging

import pytest
import torch

import kiln
from kiln.compile import ExportError
from kiln.dynamo_backend import DynamoCompiledModule, kiln_backend
from kiln.inspect import find_engines

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


class FiniteCheck(torch.nn.Module):
    """Branches on the values of an intermediate result, which torch.export cannot capture."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Linear(8, 16)
        self.second = torch.nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x)) * 2.0 + 1.0
        if not torch.isfinite(h).all():
            h = torch.clamp(h, -100.0, 100.0)
        return torch.sigmoid(self.second(h)) - 0.5


class Plain(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) + 1.0


class FiniteCheckStack(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(FiniteCheck() for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


DYNAMIC_BATCH = kiln.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(16, 8))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("device", DEVICES)
def test_default_falls_back_to_torch_compile(device, caplog):
    model = FiniteCheck().eval().to(device)
    with caplog.at_level(logging.WARNING, logger="kiln"):
        compiled = kiln.compile(model, inputs=[DYNAMIC_BATCH])
    assert isinstance(compiled, DynamoCompiledModule)
    assert any("ir='torch_compile' instead" in r.getMessage() for r in caplog.records)
    # Two graphs around the break, built again where the batch is dynamic or 1.
    built = len(compiled.graphs)
    summary = kiln.summary(compiled)
    assert summary["graphs"] == built >= 2 and summary["engines"] == built
    with torch.no_grad():
        for batch in (1, 5, 16):
            x = torch.randn(batch, 8, device=device)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    # kiln.compile built what the Input's range needs: no call captured or built again.
    assert len(compiled.graphs) == built


def test_dynamo_ir_keeps_the_export_error():
    with pytest.raises(ExportError, match="ir='torch_compile'"):
        kiln.compile(FiniteCheck().eval(), ir="dynamo", inputs=[DYNAMIC_BATCH])


def test_require_full_compilation_keeps_the_export_error():
    with pytest.raises(ExportError, match="could not capture"):
        kiln.compile(FiniteCheck().eval(), inputs=[DYNAMIC_BATCH], require_full_compilation=True)


def test_torch_compile_ir_on_a_whole_graph():
    model = Plain().eval()
    x = torch.randn(2, 3, 8, 8)
    compiled = kiln.compile(model, ir="torch_compile", inputs=[x])
    assert kiln.summary(compiled)["graphs"] == 1
    assert [path for path, _ in find_engines(compiled)]
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    profile = kiln.profile(compiled, x, iters=1)
    assert profile.engines and profile.engines[0].layers


def test_torch_compile_ir_passes_settings():
    model = Plain().eval()
    compiled = kiln.compile(
        model, ir="torch_compile", inputs=[torch.randn(1, 3, 8, 8)], torch_executed_ops={"aten::relu"}
    )
    fallback_ops = [op for op, _ in kiln.summary(compiled)["fallback"]]
    assert any("relu" in op for op in fallback_ops)


def test_torch_compile_ir_refuses_script_modules():
    with pytest.raises(TypeError, match="ScriptModule compiles with ir='ts'"):
        kiln.compile(torch.jit.script(Plain().eval()), ir="torch_compile", inputs=[torch.randn(1, 3, 8, 8)])


def test_torch_compile_ir_cannot_be_saved(tmp_path):
    compiled = kiln.compile(Plain().eval(), ir="torch_compile", inputs=[torch.randn(1, 3, 8, 8)])
    with pytest.raises(TypeError, match="cannot be saved; compile it with ir='ts'"):
        kiln.save(compiled, tmp_path / "model.ts")


@pytest.mark.parametrize("device", DEVICES)
def test_backend_builds_a_reused_graph_for_each_module(device):
    """Dynamo runs the graph after the break in FiniteCheck.forward for each of the three layers,
    passing each layer's weights; it was built once with the first layer's weights frozen in."""
    model = FiniteCheckStack().eval().to(device)
    compiled = torch.compile(model, backend=kiln_backend)
    x = torch.randn(4, 8, device=device)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
