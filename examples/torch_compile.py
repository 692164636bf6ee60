"""torch.compile(model, backend="kiln"): Kiln as a torch.compile backend.

Kiln's installed package registers the backend through the ``torch_dynamo_backends`` entry point,
so this program never imports kiln. Each graph dynamo captures is lowered to aten ops, its
supported parts become Kiln engines and the rest stays in PyTorch.

    python3 examples/torch_compile.py
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402  (examples/models.py)


def main() -> int:
    # Kiln logs what it compiled (engines, ops in Kiln, ops left to PyTorch and why) at INFO.
    logging.basicConfig(format="[%(name)s] %(message)s")
    logging.getLogger("kiln").setLevel(logging.INFO)

    model = models.SmallTransformerEncoder(attention="sdpa").eval()
    x = torch.randn(4, 16, model.d_model)

    # Settings go through options=; min_block_size and torch_executed_ops work as in kiln.compile.
    compiled = torch.compile(model, backend="kiln", options={"min_block_size": 3})
    with torch.no_grad():
        actual = compiled(x)  # the first call compiles
        expected = model(x)
    error = (actual - expected).abs().max().item() / expected.abs().max().item()
    print(f"output {tuple(actual.shape)}, max error / max |output| = {error:.1e}")
    return 0 if error <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
