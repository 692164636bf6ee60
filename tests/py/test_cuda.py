"""The CUDA backend from Python: real models compiled for the GPU in fp32 and fp16 equal eager,
on the caller's stream, with clear errors for inputs on the wrong device."""

from __future__ import annotations

import pytest
import torch

import kiln
from models import SmallResNet, SmallTransformerEncoder

pytestmark = pytest.mark.gpu

# Max abs error allowed, relative to max |eager output|.
TOLERANCE = {torch.float32: 1e-3, torch.float16: 2e-2}


def _resnet(name: str) -> torch.nn.Module:
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def _vit() -> torch.nn.Module:
    import torchvision

    model = torchvision.models.vit_b_16(weights=None)
    # torchvision zero-initializes the classifier: every output would be 0, and so every error.
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


class _Bert(torch.nn.Module):
    """HF BertModel (bert-base config, random weights) returning the last hidden state."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.bert = BertModel(BertConfig(), add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids).last_hidden_state


MODELS = {
    "small_resnet": (lambda: SmallResNet(), lambda: torch.randn(4, 3, 64, 64)),
    "small_transformer": (
        lambda: SmallTransformerEncoder(attention="manual"),
        lambda: torch.randn(2, 16, 64),
    ),
    "small_transformer_sdpa": (
        lambda: SmallTransformerEncoder(attention="sdpa"),
        lambda: torch.randn(2, 16, 64),
    ),
    "resnet18": (lambda: _resnet("resnet18"), lambda: torch.randn(2, 3, 224, 224)),
    "resnet50": (lambda: _resnet("resnet50"), lambda: torch.randn(2, 3, 224, 224)),
    "vit_b_16": (_vit, lambda: torch.randn(2, 3, 224, 224)),
    "bert_base": (_Bert, lambda: torch.randint(0, 30522, (2, 128))),
}


def _max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.float()
    return ((actual.float() - expected).abs().max() / expected.abs().max().clamp_min(1e-6)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("ir", ["dynamo", "ts"])
def test_model_on_cuda_equals_eager(name: str, dtype: torch.dtype, ir: str) -> None:
    make_model, make_input = MODELS[name]
    torch.manual_seed(0)
    model = make_model().eval().cuda()
    x = make_input().cuda()
    if x.is_floating_point():
        x = x.to(dtype)
    model = model.to(dtype)
    with torch.no_grad():
        expected = model(x)
        compiled = kiln.compile(model, ir=ir, inputs=[x], enabled_precisions={dtype})
        summary = kiln.summary(compiled)
        assert summary["engines"] >= 1, summary
        for _ in range(3):  # the first run tunes and captures a graph; later ones replay it
            actual = compiled(x)
    assert actual.device == x.device
    error = _max_relative_error(actual, expected)
    print(f"{name} {ir} {dtype}: max error {error:.2e}, {summary['ops_in_torch']} ops in PyTorch")
    assert error <= TOLERANCE[dtype], f"{name}: {error}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_bert_with_dynamic_shapes_reads_row_views_on_cuda(dtype: torch.dtype) -> None:
    """bert-base built once for batch 1..32 and sequence 8..256: the fused QKV projection read
    through row views whose strides follow each run's sequence length, equal to eager at
    several shapes (each its own CUDA graph)."""
    torch.manual_seed(0)
    model = _Bert().eval().cuda().to(dtype)
    spec = kiln.Input(min_shape=(1, 8), opt_shape=(8, 128), max_shape=(32, 256), dtype=torch.int64)
    with torch.no_grad():
        compiled = kiln.compile(model, ir="dynamo", inputs=[spec], enabled_precisions={dtype})
        layers = str(kiln.inspect(compiled))
        assert layers.count("horizontal(") == 12 and ": Shuffle(" not in layers
        assert "queryView=[12, 64, 0]" in layers and "outputView=[12, 64, 0]" in layers
        for batch, length in ((1, 8), (3, 77), (32, 256), (3, 77)):
            ids = torch.randint(0, 30522, (batch, length), device="cuda")
            error = _max_relative_error(compiled(ids), model(ids))
            assert error <= TOLERANCE[dtype], f"batch {batch}, length {length}: {error}"


def test_torch_compile_backend_on_cuda() -> None:
    model = SmallResNet().eval().cuda()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        compiled = torch.compile(model, backend="kiln")
        assert _max_relative_error(compiled(x), model(x)) <= TOLERANCE[torch.float32]


def test_runs_on_the_callers_stream() -> None:
    model = SmallResNet().eval().cuda()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        expected = model(x)
        compiled = kiln.compile(model, ir="dynamo", inputs=[x])
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            y = x * 1.0  # produced on `stream`: the engine must run after it, on it
            out = compiled(y)
        stream.synchronize()
    assert _max_relative_error(out, expected) <= TOLERANCE[torch.float32]


def test_cpu_input_to_cuda_engine_is_refused() -> None:
    model = SmallResNet().eval().cuda()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    compiled = kiln.compile(model, ir="ts", inputs=[x])
    with pytest.raises(RuntimeError, match="runs on CUDA"):
        compiled(x.cpu())


def test_engine_reports_its_arena() -> None:
    model = SmallResNet().eval().cuda()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    compiled = kiln.compile(model, ir="ts", inputs=[x])
    engine = compiled._kiln_engine_0
    planned, naive = engine.arena_bytes()
    assert 0 < planned < naive
    assert engine.backend() == "CUDA"


def test_profile_times_every_layer_with_cuda_events() -> None:
    model = SmallTransformerEncoder(attention="sdpa").eval().cuda().half()
    x = torch.randn(4, 32, model.d_model, device="cuda", dtype=torch.float16)
    compiled = kiln.compile(model, ir="dynamo", inputs=[x], enabled_precisions={torch.float16})
    with torch.no_grad():
        expected = compiled(x)
    result = kiln.profile(compiled, x, iters=5)
    (engine,) = result.engines
    assert engine.backend == "CUDA" and "CUDA events per layer" in str(engine)
    kernels = {layer.kernel for layer in engine.layers}
    # The query, key and value projections run as one GEMM that the attention reads in place.
    assert any(layer.name.startswith("horizontal(") for layer in engine.layers)
    assert "Kiln fused attention" in kernels and any(k.startswith("cuBLASLt GEMM") for k in kernels)
    for layer in engine.layers:
        # A reshape that aliases its input launches nothing and takes no time.
        assert layer.milliseconds > 0.0 or layer.kind == "Shuffle", layer
        assert layer.precision in ("float16", "float32"), layer
    assert engine.layer_milliseconds > 0.0 and engine.run_milliseconds > 0.0
    # Profiling does not disturb later runs (or their CUDA graph).
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), expected)
