"""bench/attention.py's accounting: FLOPs and bytes of an attention, the kernel a call is timed
by, and its table. The timing itself needs a GPU and is not tested here."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import attention as bench  # noqa: E402  (bench/attention.py)


def test_flops_match_torchs_count_of_the_two_matmuls():
    shape = bench.Shape(batch=2, heads=3, queries=5, keys=7, head_dim=4)
    q = torch.randn(2, 3, 5, 4)
    k = torch.randn(2, 3, 7, 4)
    v = torch.randn(2, 3, 7, 4)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as count:
        F.scaled_dot_product_attention(q, k, v)
    assert shape.flops() == count.get_total_flops() == 4 * 2 * 3 * 5 * 7 * 4
    causal = bench.Shape(batch=2, heads=3, queries=8, keys=8, head_dim=4, causal=True)
    assert causal.flops() == 2 * 2 * 3 * 8 * 8 * 4


def test_bytes_read_q_k_v_and_write_o_once():
    shape = bench.Shape(batch=2, heads=3, queries=5, keys=7, head_dim=4)
    assert shape.bytes() == 2 * (2 * 3 * 5 * 4 + 2 * 3 * 7 * 4 * 2 + 2 * 3 * 5 * 4)


def test_a_call_is_timed_by_its_busiest_kernel_not_its_copies():
    table = [("Memcpy DtoD (Device -> Device)", 4.0, 30.0),
             ("attentionTensorCoreKernel<__half, 64>", 1.0, 16.0),
             ("Memset (Device)", 1.0, 1.0)]
    assert bench.kernel_microseconds(table) == ("attentionTensorCoreKernel<__half, 64>", 16.0)


def test_table_has_a_row_per_backend_and_says_why_one_failed():
    rows = [{"shape": "bert_b32", "backend": "kiln", "wall_ms": 0.05, "kernel_us": 16.0,
             "tflops": 100.0, "tb_per_s": 1.6, "max_err": 1e-3, "kernel": "attention"},
            {"shape": "bert_b32", "backend": "cudnn", "error": "RuntimeError: no cuDNN"}]
    table = bench.markdown(rows).splitlines()
    assert len(table) == 4
    assert table[2].startswith("| bert_b32 | kiln | 0.050 | 16.0 | 100 | 1.60 |")
    assert "failed: RuntimeError: no cuDNN" in table[3]
