"""The example models Kiln is demonstrated and tested on: a small ResNet-style CNN and a small
transformer encoder. Their weights are random but seeded, so every run builds the same model.

>>> model = SmallResNet().eval()
>>> model(torch.randn(2, 3, 64, 64)).shape
torch.Size([2, 10])
>>> encoder = SmallTransformerEncoder(attention="sdpa").eval()
>>> encoder(torch.randn(2, 16, encoder.d_model)).shape
torch.Size([2, 16, 64])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _randomize_batch_norms(module: nn.Module) -> None:
    """Gives every batch norm non-trivial statistics and affine parameters: with the defaults
    (mean 0, variance 1, weight 1, bias 0) a wrong normalization would go unnoticed."""
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            with torch.no_grad():
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection, as in ResNet-18."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-style classifier for 64x64 images: conv/bn/relu stem, max pool, three residual
    stages, adaptive average pool and a linear head."""

    def __init__(self, num_classes: int = 10, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
            self.stage1 = BasicBlock(width, width)
            self.stage2 = BasicBlock(width, 2 * width, stride=2)
            self.stage3 = BasicBlock(2 * width, 4 * width, stride=2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(4 * width, num_classes)
            _randomize_batch_norms(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.head(torch.flatten(self.pool(x), 1))


class MultiHeadSelfAttention(nn.Module):
    """Self-attention over (batch, sequence, d_model) inputs.

    ``attention="manual"`` writes it out (matmul, scale, softmax, matmul);
    ``attention="sdpa"`` calls F.scaled_dot_product_attention. Both compute the same thing.
    """

    def __init__(self, d_model: int, num_heads: int, attention: str) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        if attention not in ("manual", "sdpa"):
            raise ValueError(f"attention must be 'manual' or 'sdpa', got {attention!r}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.attention = attention
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, sequence, d_model) -> (batch, heads, sequence, head_dim)."""
        return x.view(x.size(0), x.size(1), self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        if self.attention == "sdpa":
            context = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            context = torch.matmul(torch.softmax(scores, dim=-1), v)
        context = context.transpose(1, 2).reshape(x.size(0), x.size(1), self.num_heads * self.head_dim)
        return self.out(context)


class EncoderLayer(nn.Module):
    """A pre-norm transformer encoder layer: attention and a GELU MLP, each with a residual."""

    def __init__(self, d_model: int, num_heads: int, mlp_dim: int, attention: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = MultiHeadSelfAttention(d_model, num_heads, attention)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallTransformerEncoder(nn.Module):
    """A stack of encoder layers over (batch, sequence, d_model) inputs, with a final layer norm."""

    def __init__(
        self,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        mlp_dim: int = 128,
        attention: str = "manual",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.layers = nn.Sequential(
                *[EncoderLayer(d_model, num_heads, mlp_dim, attention) for _ in range(num_layers)]
            )
            self.norm = nn.LayerNorm(d_model)
            # LayerNorm starts as the identity affine map; random affine parameters test it.
            for norm in self.modules():
                if isinstance(norm, nn.LayerNorm):
                    with torch.no_grad():
                        norm.weight.uniform_(0.5, 1.5)
                        norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(x))
