"""Dynamic shapes: one engine for a range of input shapes.

``kiln.Input(min_shape, opt_shape, max_shape)`` builds engines that accept every shape in the
range (here batch 1 to 8), tuned for ``opt_shape``. A shape outside the range is refused with a
message that names the engine's optimization profile.

    python3 examples/dynamic_shapes.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import kiln

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402  (examples/models.py)


def main() -> int:
    model = models.SmallResNet().eval()
    spec = kiln.Input(min_shape=(1, 3, 64, 64), opt_shape=(4, 3, 64, 64), max_shape=(8, 3, 64, 64))
    compiled = kiln.compile(model, ir="dynamo", inputs=[spec])
    print(f"compiled: {kiln.summary(compiled)}")

    worst = 0.0
    with torch.no_grad():
        for batch in range(1, 9):
            x = torch.randn(batch, 3, 64, 64)
            expected = model(x)
            error = (compiled(x) - expected).abs().max().item() / expected.abs().max().item()
            worst = max(worst, error)
            print(f"batch {batch}: max error / max |output| = {error:.1e}")
        try:
            compiled(torch.randn(9, 3, 64, 64))
        except RuntimeError as refusal:
            print(f"batch 9 refused: {str(refusal).strip().splitlines()[0]}")
        else:
            print("batch 9 was not refused")
            return 1
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
