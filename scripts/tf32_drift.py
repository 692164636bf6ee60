"""How far TF32 convolutions move a zoo model's output, simulated on the CPU.

Each convolution's input and weight are rounded to TF32 (10 mantissa bits, round to nearest
even), as tensor cores read float32 when TF32 is allowed; the output is compared, as a fraction of
max |output|, with plain float32 and with a second TF32 run whose inputs are jittered by 1e-7 (two
TF32 runs whose operands differ in the last float32 bits, as eager's and Kiln's do). The GPU zoo
test (tests/py/test_zoo_gpu.py) turns TF32 off because of what this shows for DeepLabV3.

    python scripts/tf32_drift.py deeplabv3_resnet50 resnet50 densenet121
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "py"))
from test_zoo import ZOO, _output  # noqa: E402

_conv2d = F.conv2d


def to_tf32(t: torch.Tensor) -> torch.Tensor:
    bits = t.view(torch.int32).to(torch.int64)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~0x1FFF
    return bits.to(torch.int32).view(torch.float32)


def tf32_conv2d(*, jitter: bool) -> Callable[..., torch.Tensor]:
    def conv2d(x: torch.Tensor, weight: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if jitter:
            x = x * (1 + 1e-7 * torch.randn_like(x))
        return _conv2d(to_tf32(x), to_tf32(weight), *args, **kwargs)

    return conv2d


def run_with(conv2d: Callable[..., torch.Tensor], model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    F.conv2d = conv2d
    try:
        with torch.no_grad():
            return _output(model(x)).float()
    finally:
        F.conv2d = _conv2d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=[n for n, e in ZOO.items() if e.library != "transformers"])
    args = parser.parse_args()
    for name in args.models:
        torch.manual_seed(0)
        model = ZOO[name].make().eval()
        x = torch.randn(2, 3, 224, 224)
        reference = run_with(_conv2d, model, x)
        tf32 = run_with(tf32_conv2d(jitter=False), model, x)
        jittered = run_with(tf32_conv2d(jitter=True), model, x)
        scale = reference.abs().max()
        print(f"{name}: TF32 vs float32 {((tf32 - reference).abs().max() / scale).item():.2e}, "
              f"two TF32 runs {((tf32 - jittered).abs().max() / scale).item():.2e}", flush=True)


if __name__ == "__main__":
    main()
