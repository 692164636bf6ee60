"""kiln.profile and kiln.inspect(profile=True): per-layer times of the engines in a module."""

import pytest
import torch

import kiln
from kiln.inspect import Profile, find_engines
from models import SmallTransformerEncoder


class TwoEngines(torch.nn.Module):
    """Two engines around an op kept in PyTorch: each must be profiled on its own inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Linear(16, 32)
        self.second = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.first(x) * 2.0 + 1.0)
        h = torch.floor(h * 4.0)
        return torch.softmax(self.second(h) * 0.5 - 1.0, dim=-1)


def engine_layer_lines(engine) -> list[str]:
    """The engine's layers that are not constants, as its inspect() text lists them:
    "<name>: <Kind>(<params>)  (<inputs>) -> (<outputs>)"."""
    lines = []
    in_layers = False
    for line in engine.inspect().splitlines():
        if line == "layers:":
            in_layers = True
        elif in_layers and line.startswith("  ") and ": Constant(" not in line:
            index, rest = line.strip().split(" ", 1)
            assert index.isdigit()
            lines.append(rest)
    return lines


def check_profile(module: torch.nn.Module, inputs: list[torch.Tensor], engines: int) -> Profile:
    result = kiln.profile(module, *inputs, iters=3)
    assert len(result.engines) == engines
    for engine_profile, (_, engine) in zip(result.engines, find_engines(module)):
        layer_lines = engine_layer_lines(engine)
        assert len(engine_profile.layers) == len(layer_lines)
        for layer in engine_profile.layers:
            assert layer.milliseconds > 0.0, layer
            assert any(line.startswith(f"{layer.name}: {layer.kind}(") for line in layer_lines), layer
            assert layer.precision == "float32"
            assert layer.kernel == f"cpu reference {layer.kind}"
        times = [layer.milliseconds for layer in engine_profile.layers]
        assert times == sorted(times, reverse=True)
        assert engine_profile.layer_milliseconds == pytest.approx(sum(times))
        assert engine_profile.run_milliseconds > 0.0
        text = str(engine_profile)
        for layer in engine_profile.layers:
            assert layer.name in text
    return result


@pytest.mark.parametrize("ir", ["ts", "dynamo"])
def test_profile_reports_every_layer_of_a_transformer(ir):
    torch.manual_seed(0)
    model = SmallTransformerEncoder(attention="sdpa").eval()
    x = torch.randn(2, 16, model.d_model)
    compiled = kiln.compile(model, ir=ir, inputs=[kiln.Input(shape=tuple(x.shape))], device="cpu")
    check_profile(compiled, [x], engines=1)


def test_profile_runs_each_engine_on_its_own_inputs():
    torch.manual_seed(0)
    model = TwoEngines().eval()
    x = torch.randn(4, 16)
    compiled = kiln.compile(model, ir="ts", inputs=[kiln.Input(shape=(4, 16))], device="cpu",
                            torch_executed_ops={"aten::floor"})
    result = check_profile(compiled, [x], engines=2)
    # The profiled runs do not disturb the module.
    torch.testing.assert_close(compiled(x), model(x))
    assert str(result).count("== ") == 2


def test_inspect_with_profile_appends_the_times():
    model = TwoEngines().eval()
    x = torch.randn(4, 16)
    compiled = kiln.compile(model, ir="ts", inputs=[kiln.Input(shape=(4, 16))], device="cpu")
    text = kiln.inspect(compiled, profile=True, inputs=[x], iters=2)
    assert "layers:" in text and "wall clock per layer" in text and "share" in text
    with pytest.raises(ValueError, match="inputs"):
        kiln.inspect(compiled, profile=True)


def test_profile_checks_its_arguments():
    with pytest.raises(TypeError):
        kiln.profile("model.ts")
    with pytest.raises(ValueError, match="iters"):
        kiln.profile(TwoEngines(), torch.randn(4, 16), iters=0)
    assert "No Kiln engines" in str(kiln.profile(TwoEngines(), torch.randn(4, 16)))
