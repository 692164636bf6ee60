"""bench/roofline.py's FLOP counts against the models' closed-form counts."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import roofline  # noqa: E402  (bench/roofline.py)


def transformer_flops(*, layers: int, tokens: int, width: int, ffn: int) -> int:
    """Two FLOPs per multiply-add of the projections, the FFN and attention's two matmuls."""
    projections = 4 * width * width + 2 * width * ffn
    attention = 2 * tokens * width
    return 2 * layers * tokens * (projections + attention)


def test_bert_base_counts_projections_ffn_and_attention():
    pytest.importorskip("transformers")
    expected = transformer_flops(layers=12, tokens=128, width=768, ffn=3072)
    assert roofline.flops_per_sample("bert_base") == expected


def test_vit_b_16_counts_the_fused_multi_head_attention_path_too():
    # 196 patches + the class token; the patch embedding and the head are the rest.
    encoder = transformer_flops(layers=12, tokens=197, width=768, ffn=3072)
    patch_embedding = 2 * 196 * 768 * 3 * 16 * 16
    head = 2 * 768 * 1000
    assert roofline.flops_per_sample("vit_b_16") == encoder + patch_embedding + head


def test_resnet50_is_its_published_4_1_gmacs():
    assert roofline.flops_per_sample("resnet50") == pytest.approx(2 * 4.09e9, rel=0.01)


def test_achieved_tflops_is_work_times_throughput():
    row = {"model": "resnet50", "throughput": 1000.0}
    assert roofline.achieved_tflops(row) == pytest.approx(roofline.flops_per_sample("resnet50") / 1e9)
    assert roofline.achieved_tflops({"model": "resnet50", "error": "failed"}) is None
