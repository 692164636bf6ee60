"""The model zoo on the CPU backend: torchvision, timm and HF transformers models (random weights, small
inputs or small configs) through torch.compile(backend="kiln") with nothing left to PyTorch, equal
to eager. Models that still leave ops to PyTorch are strict xfails naming those ops, so a fix shows
up as an unexpected pass. test_zoo_fallback_table prints each model's fallback count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import kiln

# Max abs error allowed, relative to max |eager output| (float32 on the CPU backend).
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ZooModel:
    library: str  # the package that defines the model
    make: Callable[[], torch.nn.Module]
    example: Callable[[], torch.Tensor]
    # Ops that still run in PyTorch (the reason for a strict xfail), or empty.
    fallback: tuple[str, ...] = ()
    # Also compiled through TorchScript (kiln.compile(ir="ts")).
    torchscript: bool = False


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        import torchvision

        if name == "deeplabv3_resnet50":
            return torchvision.models.segmentation.deeplabv3_resnet50(
                weights=None, weights_backbone=None, aux_loss=False
            )
        model = getattr(torchvision.models, name)(weights=None)
        if name == "vit_b_16":
            # torchvision zero-initializes the classifier: every output would be 0.
            torch.nn.init.normal_(model.heads.head.weight, std=0.02)
        return model

    return make


class _LastHiddenState(torch.nn.Module):
    """An HF transformers model called with input_ids, returning the last hidden state."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state


def _hf(name: str) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        import transformers as hf

        small = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 128}
        if name == "bert":
            model = hf.BertModel(hf.BertConfig(**small), add_pooling_layer=False)
        elif name == "roberta":
            model = hf.RobertaModel(hf.RobertaConfig(**small), add_pooling_layer=False)
        elif name == "distilbert":
            model = hf.DistilBertModel(hf.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128))
        elif name == "gpt2":
            model = hf.GPT2Model(hf.GPT2Config(n_embd=64, n_layer=2, n_head=4))
        elif name == "t5_encoder":
            model = hf.T5EncoderModel(hf.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4))
        else:
            raise ValueError(name)
        return _LastHiddenState(model)

    return make


def _timm(name: str) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return make


def _images(size: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(1, 3, size, size)


def _tokens() -> torch.Tensor:
    return torch.randint(0, 1000, (2, 16))


ZOO: dict[str, ZooModel] = {
    "resnet50": ZooModel("torchvision", _torchvision("resnet50"), _images(64), torchscript=True),
    "mobilenet_v3_large": ZooModel("torchvision", _torchvision("mobilenet_v3_large"), _images(64), torchscript=True),
    "efficientnet_b0": ZooModel("torchvision", _torchvision("efficientnet_b0"), _images(64), torchscript=True),
    "convnext_tiny": ZooModel("torchvision", _torchvision("convnext_tiny"), _images(64), torchscript=True),
    "densenet121": ZooModel("torchvision", _torchvision("densenet121"), _images(64), torchscript=True),
    "vit_b_16": ZooModel("torchvision", _torchvision("vit_b_16"), _images(224)),
    "swin_t": ZooModel("torchvision", _torchvision("swin_t"), _images(224)),
    "deeplabv3_resnet50": ZooModel("torchvision", _torchvision("deeplabv3_resnet50"), _images(64)),
    "timm_resnet50": ZooModel("timm", _timm("resnet50"), _images(64), torchscript=True),
    "timm_vit_small_patch16_224": ZooModel("timm", _timm("vit_small_patch16_224"), _images(224)),
    "bert": ZooModel("transformers", _hf("bert"), _tokens),
    "distilbert": ZooModel("transformers", _hf("distilbert"), _tokens),
    "gpt2": ZooModel("transformers", _hf("gpt2"), _tokens),
    "t5_encoder": ZooModel("transformers", _hf("t5_encoder"), _tokens),
    "roberta": ZooModel("transformers", _hf("roberta"), _tokens),
}


def _output(value: object) -> torch.Tensor:
    # Segmentation models return {"out": ...}.
    return value["out"] if isinstance(value, dict) else value  # type: ignore[index]


def _max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-6)).item()


def _params(torchscript_only: bool = False) -> list[object]:
    params = []
    for name, entry in ZOO.items():
        if torchscript_only and not entry.torchscript:
            continue
        marks = []
        if entry.fallback:
            reason = "still left to PyTorch: " + ", ".join(entry.fallback)
            marks.append(pytest.mark.xfail(reason=reason, strict=True, raises=RuntimeError))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("name", _params())
def test_zoo_through_torch_compile(name: str) -> None:
    pytest.importorskip(ZOO[name].library)
    torch.manual_seed(0)
    model = ZOO[name].make().eval()
    x = ZOO[name].example()
    with torch.no_grad():
        expected = _output(model(x))
        torch._dynamo.reset()
        compiled = torch.compile(
            model, backend="kiln", fullgraph=True,
            options={"require_full_compilation": True, "min_block_size": 1},
        )
        actual = _output(compiled(x))
    assert _max_relative_error(actual, expected) <= TOLERANCE


@pytest.mark.parametrize("name", _params(torchscript_only=True))
def test_zoo_cnn_through_torchscript(name: str) -> None:
    torch.manual_seed(0)
    model = ZOO[name].make().eval()
    x = ZOO[name].example()
    with torch.no_grad():
        expected = _output(model(x))
        compiled = kiln.compile(model, ir="ts", inputs=[x], require_full_compilation=True, min_block_size=1)
        actual = _output(compiled(x))
    assert _max_relative_error(actual, expected) <= TOLERANCE


def test_zoo_fallback_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints each model's ops left to PyTorch (kiln.compile(ir="dynamo") at default settings) and
    checks that they are the ones ZOO names."""
    rows = []
    for name, entry in ZOO.items():
        try:
            __import__(entry.library)
        except ImportError:
            rows.append(f"{name}: skipped ({entry.library} is not installed)")
            continue
        torch.manual_seed(0)
        model = entry.make().eval()
        with torch.no_grad():
            summary = kiln.summary(kiln.compile(model, ir="dynamo", inputs=[entry.example()]))
        missing = sorted({op for op, why in summary["fallback"] if "no converter" in why or "refused" in why})
        rows.append(f"{name}: {summary['ops_in_torch']} op(s) in PyTorch {missing}")
        assert (summary["ops_in_torch"] == 0) == (not entry.fallback), (name, summary["fallback"])
    with capsys.disabled():
        print("\nmodel zoo, ops left to PyTorch:\n  " + "\n  ".join(rows))


def _dynamic_spec(example: torch.Tensor) -> kiln.Input:
    """The example's shape with a dynamic batch 1..4 and, for token ids, a dynamic sequence
    length 8..64."""
    shape = tuple(example.shape)
    if example.dtype == torch.int64:
        return kiln.Input(min_shape=(1, 8), opt_shape=shape, max_shape=(4, 64), dtype=torch.int64)
    return kiln.Input(min_shape=(1, *shape[1:]), opt_shape=shape, max_shape=(4, *shape[1:]))


def _other_shape(example: torch.Tensor) -> torch.Tensor:
    """An input of another shape in _dynamic_spec's range than the example's."""
    if example.dtype == torch.int64:
        return torch.randint(0, 1000, (3, 37))
    return torch.randn(3, *example.shape[1:])


@pytest.mark.parametrize("name", [p for p in _params() if not ZOO[p.values[0]].fallback])
def test_zoo_with_dynamic_shapes(name: str) -> None:
    """Each model compiled once with a dynamic batch (and sequence length for the transformers):
    nothing left to PyTorch, and another shape in the range equals eager."""
    pytest.importorskip(ZOO[name].library)
    torch.manual_seed(0)
    model = ZOO[name].make().eval()
    example = ZOO[name].example()
    with torch.no_grad():
        compiled = kiln.compile(model, ir="dynamo", inputs=[_dynamic_spec(example)],
                                require_full_compilation=True)
        assert kiln.summary(compiled)["engines"] == 1
        x = _other_shape(example)
        assert _max_relative_error(_output(compiled(x)), _output(model(x))) <= TOLERANCE
