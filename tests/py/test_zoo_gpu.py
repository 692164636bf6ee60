"""The model zoo at full size on the GPU: torchvision models at 224x224 and HF transformers models
at their default (base) configs, random weights, through torch.compile(backend="kiln") with
nothing left to PyTorch, in float32 and float16, against float32 eager on the same GPU. The CNNs
also through kiln.compile(ir="ts"). Small configs of the same models run on the CPU in
test_zoo.py; this file adds the sizes and precisions that only a GPU runs in reasonable time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import kiln
from test_zoo import ZOO, _LastHiddenState, _max_relative_error, _output

pytestmark = pytest.mark.gpu

# Max abs error allowed, relative to max |eager float32 output|. float16 is the bar for
# reduced precision (1e-2); float32 allows for reordered float32 arithmetic, with TF32 off (see
# `float32_without_tf32`).
TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2}


@pytest.fixture(autouse=True)
def float32_without_tf32():
    """TF32 off for eager's reference and for Kiln (which follows torch's flags by default).

    PyTorch runs float32 convolutions on TF32 by default. Two TF32 runs of DeepLabV3 differ by
    2.4e-3 of max |output| (scripts/tf32_drift.py, which simulates TF32 on the CPU), over the
    float32 tolerance, so the reference must be plain float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _hf_full(name: str) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        import transformers as hf

        configs = {
            "bert": lambda: hf.BertModel(hf.BertConfig(), add_pooling_layer=False),
            "roberta": lambda: hf.RobertaModel(hf.RobertaConfig(), add_pooling_layer=False),
            "distilbert": lambda: hf.DistilBertModel(hf.DistilBertConfig()),
            "gpt2": lambda: hf.GPT2Model(hf.GPT2Config()),
            "t5_encoder": lambda: hf.T5EncoderModel(hf.T5Config()),
        }
        return _LastHiddenState(configs[name]())

    return make


def _full_size(name: str) -> tuple[Callable[[], torch.nn.Module], Callable[[], torch.Tensor]]:
    entry = ZOO[name]
    if entry.library == "transformers":
        return _hf_full(name), lambda: torch.randint(0, 1000, (2, 128))
    return entry.make, lambda: torch.randn(2, 3, 224, 224)


def _params(torchscript_only: bool = False) -> list[object]:
    params = []
    for name, entry in ZOO.items():
        if torchscript_only and not entry.torchscript:
            continue
        for dtype in TOLERANCE:
            marks = []
            if entry.fallback:
                reason = "still left to PyTorch: " + ", ".join(entry.fallback)
                marks.append(pytest.mark.xfail(reason=reason, strict=True, raises=RuntimeError))
            params.append(pytest.param(name, dtype, marks=marks, id=f"{name}-{str(dtype)[6:]}"))
    return params


def _eager_and_inputs(name: str, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model in `dtype` on the GPU, its input, and float32 eager's output."""
    pytest.importorskip(ZOO[name].library)
    make, example = _full_size(name)
    torch.manual_seed(0)
    model = make().eval().cuda()
    x = example().cuda()
    with torch.no_grad():
        expected = _output(model(x)).float()
    if dtype != torch.float32:
        model = model.to(dtype)
        if x.is_floating_point():
            x = x.to(dtype)
    return model, x, expected


@pytest.mark.parametrize(("name", "dtype"), _params())
def test_full_size_zoo_through_torch_compile(name: str, dtype: torch.dtype) -> None:
    model, x, expected = _eager_and_inputs(name, dtype)
    with torch.no_grad():
        torch._dynamo.reset()
        compiled = torch.compile(
            model, backend="kiln", fullgraph=True,
            options={"require_full_compilation": True, "min_block_size": 1},
        )
        actual = _output(compiled(x)).float()
    assert _max_relative_error(actual, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize(("name", "dtype"), _params(torchscript_only=True))
def test_full_size_cnn_through_torchscript(name: str, dtype: torch.dtype) -> None:
    model, x, expected = _eager_and_inputs(name, dtype)
    with torch.no_grad():
        compiled = kiln.compile(
            model, ir="ts", inputs=[x], require_full_compilation=True, min_block_size=1,
            enabled_precisions={dtype},
        )
        actual = _output(compiled(x)).float()
    assert _max_relative_error(actual, expected) <= TOLERANCE[dtype]
