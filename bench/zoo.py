"""The benchmark's model zoo as data: 42 public models from torchvision, timm and HF transformers.

Every model is built in code with random weights (``torch.manual_seed(0)``; timm with
``pretrained=False``, transformers from their default or published configs written out here,
never ``from_pretrained``), so nothing is downloaded. Each entry says how to build the model, how
to make its inputs at a batch size (a list of tensors: images, token ids, audio, or two images for
CLIP), the batch sizes the benchmark runs it at, and, where the model stands in
for one the benchmark's issue names, why. Every model's forward returns one tensor.

    python bench/zoo.py            # lists the zoo
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

IMAGE_SIZE = 224
SEQUENCE = 128  # tokens a sequence, for every text model
AUDIO_SAMPLES = 16000  # one second at wav2vec2's 16 kHz
CALIBRATION_BATCH = 2  # a batch size no benchmark row uses: calibration sees other inputs


@dataclass(frozen=True)
class ZooModel:
    name: str
    source: str  # the package that defines the model: torchvision, timm or transformers
    make: Callable[[], nn.Module]  # random weights; build() seeds and finishes it
    inputs: Callable[[int], list[torch.Tensor]]  # batch size -> the forward's inputs (on the CPU)
    batches: tuple[int, ...] = (1, 32)
    note: str = ""  # why this model stands in for the one the issue names, if it does


def build(name: str, *, weight_scale: float = 1.0) -> nn.Module:
    """The zoo model ``name`` in eval mode (on the CPU, fp32): random weights seeded with 0,
    matrices and kernels times ``weight_scale`` (see scale_weights), batch norms calibrated."""
    torch.manual_seed(0)
    model = ZOO[name].make().eval()
    fill_zero_weights(model)
    if weight_scale != 1.0:
        scale_weights(model, weight_scale)
    calibrate_batch_norms(model, ZOO[name].inputs(CALIBRATION_BATCH))
    return model


def make_inputs(name: str, batch: int) -> list[torch.Tensor]:
    return ZOO[name].inputs(batch)


def fill_zero_weights(model: nn.Module) -> None:
    """Re-initializes weights that their model initializes to zero: classifier heads (torchvision's
    ViT, timm's MLP-Mixer) would make every output, and so every error, zero. A matrix or kernel
    gets N(0, 0.02); a normalization's scale gets ones."""
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter) or weight.numel() == 0 or weight.any():
                continue
            if weight.dim() >= 2:
                nn.init.normal_(weight, std=0.02)
            else:
                nn.init.ones_(weight)


def calibrate_batch_norms(model: nn.Module, inputs: list[torch.Tensor]) -> None:
    """Sets every batch norm's statistics so that it scales each channel of its input to unit
    root mean square over one forward of ``inputs``. With a fresh model's statistics (mean 0,
    variance 1) random convolutions scale their activations by a factor a layer, and deep
    networks' outputs end near 1e-14 (EfficientNet) or 1e12 (Inception v3), beyond fp16's range;
    calibrated, activations stay near unit scale, as in a trained network. The mean is left at 0:
    subtracting it as well (the statistics training would leave) makes a random ReLU network
    chaotic, amplifying any rounding by 5 to 50 times, so that fp16's own error would hide a
    wrong kernel's. Each norm is set just before it runs, from the input its calibrated
    predecessors give it."""

    def set_statistics(norm: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        norm.running_mean.zero_()
        norm.running_var.copy_(x.pow(2).mean(dim=[d for d in range(x.dim()) if d != 1]))

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    hooks = [norm.register_forward_pre_hook(set_statistics) for norm in norms]
    try:
        with torch.no_grad():
            model.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()


def scale_weights(model: nn.Module, factor: float) -> None:
    """Multiplies every matrix and convolution kernel (parameters of two or more dims) by
    ``factor``. Random weights can make activations overflow fp16 (65504) where trained ones do
    not (a residual stream that grows layer by layer, attention logits); scaled down, the branches
    add less and the logits shrink, and every layer still computes what it does with any weights.
    A batch norm calibrated afterwards undoes the scale of what feeds it."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2 and parameter.is_floating_point():
                parameter.mul_(factor)


# Inputs. Each batch size gets its own seeded generator, so an input is the same in every run.

def _images(size: int = IMAGE_SIZE) -> Callable[[int], list[torch.Tensor]]:
    def inputs(batch: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(batch)
        return [torch.randn(batch, 3, size, size, generator=generator)]

    return inputs


def _tokens(vocab: int) -> Callable[[int], list[torch.Tensor]]:
    def inputs(batch: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(batch)
        return [torch.randint(0, vocab, (batch, SEQUENCE), generator=generator)]

    return inputs


def _text_and_images(vocab: int, sequence: int) -> Callable[[int], list[torch.Tensor]]:
    def inputs(batch: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(batch)
        return [torch.randint(0, vocab, (batch, sequence), generator=generator),
                torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)]

    return inputs


def _audio(batch: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(batch)
    return [torch.randn(batch, AUDIO_SAMPLES, generator=generator)]


# Models.

class _Output(nn.Module):
    """Calls ``model`` and returns ``key`` of what it returns, a dict (torchvision's segmentation
    models) or a ModelOutput (transformers)."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs)[self.key]


def _torchvision(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **kwargs)

    return make


def _deeplabv3() -> nn.Module:
    import torchvision

    model = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=False)
    return _Output(model, key="out")




def _timm(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return make


def _hf(make_model: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """A transformers model called with its one input, returning ``last_hidden_state``."""
    return lambda: _Output(make_model(), key="last_hidden_state")


def _bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(), add_pooling_layer=False)  # bert-base-uncased


def _distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    return DistilBertModel(DistilBertConfig())  # distilbert-base-uncased


def _roberta() -> nn.Module:
    from transformers import RobertaConfig, RobertaModel

    # roberta-base: RobertaConfig's defaults are BERT's vocabulary and positions.
    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                           layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return RobertaModel(config, add_pooling_layer=False)


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(GPT2Config())  # gpt2 (124M)


def _t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config())  # T5Config's defaults are t5-small


def _wav2vec2() -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    return Wav2Vec2Model(Wav2Vec2Config())  # wav2vec2-base


def _clip_vision() -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return CLIPVisionModel(CLIPVisionConfig())  # ViT-B/32, clip-vit-base-patch32's vision tower


def _clip() -> nn.Module:
    from transformers import CLIPConfig, CLIPModel

    # clip-vit-base-patch32: token ids and images in, their similarities out.
    return _Output(CLIPModel(CLIPConfig()), key="logits_per_image")


def _bart_encoder() -> nn.Module:
    from transformers import BartConfig
    from transformers.models.bart.modeling_bart import BartEncoder

    # bart-base; BartConfig's defaults are bart-large.
    config = BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                        encoder_attention_heads=12, decoder_attention_heads=12,
                        encoder_ffn_dim=3072, decoder_ffn_dim=3072)
    return BartEncoder(config)


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaModel

    # A small Llama: RMSNorm, rotary embeddings, SwiGLU MLP, causal attention.
    config = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1408,
                         num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8,
                         max_position_embeddings=2048)
    return LlamaModel(config)


def _zoo(*models: ZooModel) -> dict[str, ZooModel]:
    return {model.name: model for model in models}


_TV = "torchvision"
_TIMM = "timm"
_HF = "transformers"
_LARGE = (1, 32, 256)  # the benchmark's throughput models also run at batch 256

ZOO: dict[str, ZooModel] = _zoo(
    ZooModel("resnet18", _TV, _torchvision("resnet18"), _images()),
    ZooModel("resnet50", _TV, _torchvision("resnet50"), _images(), _LARGE),
    ZooModel("resnext50_32x4d", _TV, _torchvision("resnext50_32x4d"), _images()),
    ZooModel("wide_resnet50_2", _TV, _torchvision("wide_resnet50_2"), _images()),
    ZooModel("mobilenet_v2", _TV, _torchvision("mobilenet_v2"), _images()),
    ZooModel("mobilenet_v3_large", _TV, _torchvision("mobilenet_v3_large"), _images()),
    ZooModel("mobilenet_v3_small", _TV, _torchvision("mobilenet_v3_small"), _images()),
    ZooModel("efficientnet_b0", _TV, _torchvision("efficientnet_b0"), _images()),
    ZooModel("efficientnet_v2_s", _TV, _torchvision("efficientnet_v2_s"), _images()),
    ZooModel("convnext_tiny", _TV, _torchvision("convnext_tiny"), _images()),
    ZooModel("regnet_x_1_6gf", _TV, _torchvision("regnet_x_1_6gf"), _images()),
    ZooModel("densenet121", _TV, _torchvision("densenet121"), _images()),
    # The auxiliary classifiers run only in training.
    ZooModel("googlenet", _TV, _torchvision("googlenet", aux_logits=False, init_weights=True),
             _images()),
    ZooModel("inception_v3", _TV, _torchvision("inception_v3", aux_logits=False,
                                               init_weights=True), _images(299)),
    ZooModel("vgg16", _TV, _torchvision("vgg16"), _images()),
    ZooModel("vit_b_16", _TV, _torchvision("vit_b_16"), _images(), _LARGE),
    ZooModel("swin_t", _TV, _torchvision("swin_t"), _images()),
    ZooModel("maxvit_t", _TV, _torchvision("maxvit_t"), _images()),
    ZooModel("deeplabv3_resnet50", _TV, _deeplabv3, _images()),
    ZooModel("efficientformer_l1", _TIMM, _timm("efficientformer_l1"), _images()),
    ZooModel("levit_128s", _TIMM, _timm("levit_128s"), _images()),
    ZooModel("mixer_b16_224", _TIMM, _timm("mixer_b16_224"), _images()),
    ZooModel("poolformer_s12", _TIMM, _timm("poolformer_s12"), _images()),
    ZooModel("ghostnet_100", _TIMM, _timm("ghostnet_100"), _images()),
    ZooModel("cspdarknet53", _TIMM, _timm("cspdarknet53"), _images()),
    ZooModel("rexnet_100", _TIMM, _timm("rexnet_100"), _images()),
    ZooModel("hrnet_w18_small", _TIMM, _timm("hrnet_w18_small"), _images()),
    ZooModel("convnextv2_atto", _TIMM, _timm("convnextv2_atto"), _images()),
    ZooModel("fastvit_t8", _TIMM, _timm("fastvit_t8"), _images()),
    ZooModel("edgenext_small", _TIMM, _timm("edgenext_small"), _images()),
    ZooModel("coatnet_0_rw_224", _TIMM, _timm("coatnet_0_rw_224"), _images()),
    ZooModel("efficientvit_b0", _TIMM, _timm("efficientvit_b0"), _images()),
    # The benchmark's BERT has run at batch 128 since its first run.
    ZooModel("bert_base", _HF, _hf(_bert), _tokens(30522), (1, 32, 128)),
    ZooModel("distilbert", _HF, _hf(_distilbert), _tokens(30522)),
    ZooModel("roberta_base", _HF, _hf(_roberta), _tokens(50265)),
    ZooModel("gpt2", _HF, _hf(_gpt2), _tokens(50257)),
    ZooModel("t5_small_encoder", _HF, _hf(_t5_encoder), _tokens(32128)),
    ZooModel("wav2vec2_base", _HF, _hf(_wav2vec2), _audio),
    ZooModel("clip_vit_b_32_vision", _HF, _hf(_clip_vision), _images()),
    ZooModel("bart_base_encoder", _HF, _hf(_bart_encoder), _tokens(50265)),
    ZooModel("llama_small", _HF, _hf(_llama), _tokens(32000)),
    ZooModel("clip_vit_b_32", _HF, _clip, _text_and_images(49408, 77),
             note="in place of torchvision's raft_small as the model with more than one input: "
                  "RAFT makes its coordinate grids in fp32 whatever its weights' dtype, so that "
                  "grid_sample refuses its fp16 features and it cannot run in fp16 at all"),
)


def main() -> int:
    for model in ZOO.values():
        shapes = ", ".join(str(tuple(x.shape)) for x in model.inputs(1))
        note = f"  ({model.note})" if model.note else ""
        print(f"{model.name:24} {model.source:12} batches {model.batches}  inputs at batch 1: "
              f"{shapes}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
