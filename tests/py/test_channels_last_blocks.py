"""fp16 ConvNeXt-style networks on the CPU backend, which builds the layout the GPU runs: their
convolutions channels-last, and the permutes the model writes around its layer norms and linear
layers (torchvision's CNBlock, timm's LayerNorm2d and conv-MLP blocks) cancelled against the
layout's transposes, so that a transpose is left only at each edge of the engine (into NHWC after
the input, back before the output). Outputs equal eager's within fp16's rounding."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import kiln
from kiln.inspect import find_engines

# "  <index> <name>: <Kind>(<params>)  (<inputs>) -> (<outputs>)"; a fused layer's name has spaces.
_LAYER = re.compile(r"^  \d+ (?P<name>.+?): (?P<kind>\w+)\((?P<params>.*)\)  "
                    r"\((?P<inputs>.*)\) -> \((?P<outputs>.*)\)$")


@dataclass
class Layer:
    name: str
    kind: str
    params: str
    inputs: list[str]
    outputs: list[str]

    def transposes(self) -> bool:
        """A shuffle that moves elements: one with a permutation (a reshape alone aliases)."""
        return self.kind == "Shuffle" and not (
            "firstPermutation=[]" in self.params and "secondPermutation=[]" in self.params)


def engine_layers(module: nn.Module) -> tuple[list[Layer], list[str], list[str]]:
    """The one engine's layers, input names and output names, from its inspect() text."""
    engines = list(find_engines(module))
    assert len(engines) == 1, [path for path, _ in engines]
    engine = engines[0][1]
    layers, inputs, outputs, section = [], [], [], None
    for line in engine.inspect().splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
            continue
        if section in ("inputs", "outputs") and line.startswith("  "):
            (inputs if section == "inputs" else outputs).append(line.strip().split(":")[0])
        elif section == "layers":
            match = _LAYER.match(line)
            assert match, line
            layers.append(Layer(match["name"], match["kind"], match["params"],
                                match["inputs"].split(", "),
                                [o.split(":")[0] for o in match["outputs"].split(", ")]))
    return layers, inputs, outputs


def inner_transposes(module: nn.Module) -> list[str]:
    """The engine's transposes that are not at an edge: at an edge, a transpose reads the
    engine's input through layers that only cast or move elements, or its output reaches the
    engine's output so."""
    layers, inputs, outputs = engine_layers(module)
    producer = {o: layer for layer in layers for o in layer.outputs}
    readers: dict[str, list[Layer]] = {}
    for layer in layers:
        for name in layer.inputs:
            readers.setdefault(name, []).append(layer)
    moves = ("Cast", "Shuffle")

    def from_input(tensor: str) -> bool:
        while tensor not in inputs:
            layer = producer.get(tensor)
            if layer is None or layer.kind not in moves:
                return False
            tensor = layer.inputs[0]
        return True

    def to_output(tensor: str) -> bool:
        while tensor not in outputs:
            following = readers.get(tensor, [])
            if len(following) != 1 or following[0].kind not in moves:
                return False
            tensor = following[0].outputs[0]
        return True

    return [f"{layer.name}: {layer.params}" for layer in layers if layer.transposes()
            and not from_input(layer.inputs[0]) and not to_output(layer.outputs[0])]


class LayerNorm2dBlock(nn.Module):
    """A conv -> LayerNorm2d (permute, layer norm over channels, permute back) -> GELU -> conv
    block with a residual, the norm written as timm's LayerNorm2d is."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h = self.conv1(x).permute(0, 2, 3, 1)
        h = self.norm(h).permute(0, 3, 1, 2)
        return x + self.conv2(nn.functional.gelu(h))


def tiny_torchvision_convnext() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    return ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], layer_scale=0.5,
                    num_classes=10)


def tiny_timm_convnext(conv_mlp: bool) -> nn.Module:
    timm_convnext = pytest.importorskip("timm.models.convnext")
    return timm_convnext.ConvNeXt(depths=(2, 1, 1, 1), dims=(8, 16, 16, 24), conv_mlp=conv_mlp,
                                  ls_init_value=0.5, num_classes=10)


MODELS = {
    "torchvision_convnext": tiny_torchvision_convnext,
    "timm_convnext": lambda: tiny_timm_convnext(conv_mlp=False),
    "timm_convnext_conv_mlp": lambda: tiny_timm_convnext(conv_mlp=True),
    "layer_norm2d_block": lambda: LayerNorm2dBlock(16),
}


# CNNs that split and concatenate channels: DenseNet's dense blocks (each layer concatenates the
# block's features, then a batch norm and ReLU that no convolution folds), CSPDarkNet's stages
# (channels split in halves, one through the blocks, both concatenated), GhostNet's ghost modules
# (primary and cheap features concatenated, sliced to the module's channels).
def tiny_torchvision_densenet() -> nn.Module:
    from torchvision.models.densenet import DenseNet
    return DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16, bn_size=2,
                    num_classes=10)


def tiny_timm_cspdarknet() -> nn.Module:
    cspnet = pytest.importorskip("timm.models.cspnet")
    # cspdarknet53's stages, two of them and narrower.
    stages = cspnet.CspStagesCfg(depth=(1, 2), out_chs=(16, 32), stride=2, expand_ratio=(2.0, 1.0),
                                 bottle_ratio=(0.5, 1.0), block_ratio=(1.0, 0.5), down_growth=True,
                                 block_type="dark")
    config = cspnet.CspModelCfg(stem=cspnet.CspStemCfg(out_chs=8, kernel_size=3, stride=1, pool=""),
                                stages=stages)
    return cspnet.CspNet(config, num_classes=10, zero_init_last=False)


def tiny_timm_ghostnet() -> nn.Module:
    ghostnet = pytest.importorskip("timm.models.ghostnet")
    # k, expansion, out channels, squeeze-excitation ratio, stride: ghostnet_100's first stages.
    cfgs = [[[3, 16, 16, 0, 1]], [[3, 48, 24, 0, 2]], [[3, 72, 24, 0, 1]], [[5, 72, 40, 0.25, 2]]]
    return ghostnet.GhostNet(cfgs, num_classes=10, width=0.5)


SPLIT_CONCAT_MODELS = {
    "torchvision_densenet": tiny_torchvision_densenet,
    "timm_cspdarknet": tiny_timm_cspdarknet,
    "timm_ghostnet": tiny_timm_ghostnet,
}


def check_fp16_channels_last_between_the_edges(model: nn.Module) -> list:
    """Compiles the fp32 model in fp16 on the CPU backend and checks that every convolution runs
    channels-last with a transpose only at each edge of the engine, and that its output equals
    fp32 eager's within fp16's error; returns the engine's layers."""
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        expected = model(x)
        compiled = kiln.compile(model.half(), ir="dynamo", inputs=[x.half()],
                                enabled_precisions={torch.half}, device="cpu",
                                require_full_compilation=True)
        actual = compiled(x.half()).float()
    layers, _, _ = engine_layers(compiled)
    convolutions = [layer for layer in layers if layer.kind == "Convolution"]
    assert convolutions and all("channelsLast=true" in layer.params for layer in convolutions)
    assert inner_transposes(compiled) == []
    assert sum(layer.transposes() for layer in layers) <= 2  # into NHWC, back to NCHW
    error = (actual - expected).abs().max().item() / expected.abs().max().item()
    assert error < 2e-2, error
    return layers


@pytest.mark.parametrize("name", list(MODELS))
def test_convnext_style_fp16_runs_channels_last_between_the_edges(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    with torch.no_grad():
        # Norm affines away from 1 and 0, as a trained model's are (layer scales: 0.5 above).
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    check_fp16_channels_last_between_the_edges(model)


@pytest.mark.parametrize("name", list(SPLIT_CONCAT_MODELS))
def test_split_and_concat_fp16_runs_channels_last_between_the_edges(name: str) -> None:
    """The transposes around concatenations, slices and batch norms move through them: a
    transpose is left only at each edge of the engine, and outputs equal eager's."""
    torch.manual_seed(0)
    model = SPLIT_CONCAT_MODELS[name]().eval()
    with torch.no_grad():
        # Statistics and affines as a trained model's, so that no norm is the identity.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    layers = check_fp16_channels_last_between_the_edges(model)
    assert any(layer.kind in ("Concat", "Slice") for layer in layers)
