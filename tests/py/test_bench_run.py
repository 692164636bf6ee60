"""bench/run.py's merging of a run measured in parts (max-autotune timed in its own call)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import run as bench  # noqa: E402  (bench/run.py)


def row(backend: str, median_ms: float, *, gpu: str = "NVIDIA H200", **extra) -> dict:
    return {"model": "resnet50", "batch": 256, "dtype": "fp16", "backend": backend, "gpu": gpu,
            "median_ms": median_ms, "p90_ms": median_ms, "throughput": 256 / median_ms * 1e3,
            "tflops": 1.0, "build_s": 1.0, "max_err": 1e-3, **extra}


def write_part(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ratios_are_taken_across_every_part(tmp_path):
    # Part 1 has no max-autotune; its own ratio for Kiln was against inductor's 10 ms.
    first = [row("eager", 24.0), row("inductor", 10.0), row("kiln", 8.0)]
    bench.add_ratios(first)
    assert first[2]["speedup_vs_best_inductor"] == 1.25
    part1 = write_part(tmp_path / "a" / "2026-12-06-NVIDIA_H200.jsonl", first)
    part2 = write_part(tmp_path / "b" / "2026-12-06-NVIDIA_H200.jsonl",
                       [row("inductor-max-autotune", 9.0)])

    assert bench.main(["--merge", str(part1), str(part2), "--out", str(tmp_path / "out")]) == 0

    merged = [json.loads(line) for line in
              (tmp_path / "out" / "2026-12-06-NVIDIA_H200.jsonl").read_text().splitlines()]
    assert [r["backend"] for r in merged] == ["eager", "inductor", "inductor-max-autotune", "kiln"]
    kiln = merged[-1]
    assert kiln["speedup_vs_best_inductor"] == pytest.approx(9.0 / 8.0, abs=1e-3)
    assert kiln["speedup_vs_eager"] == 3.0
    table = (tmp_path / "out" / "2026-12-06-NVIDIA_H200.md").read_text()
    assert "| resnet50 | 256 | fp16 | inductor-max-autotune | 9.000 |" in table


def test_a_row_measured_again_keeps_its_last_measurement(tmp_path):
    part1 = write_part(tmp_path / "1.jsonl", [row("inductor", 10.0), row("kiln", 8.0)])
    part2 = write_part(tmp_path / "2.jsonl", [row("inductor", 12.0)])
    merged = bench.merge([part1, part2])
    assert [(r["backend"], r["median_ms"]) for r in merged] == [("inductor", 12.0), ("kiln", 8.0)]
    assert merged[1]["speedup_vs_best_inductor"] == 1.5


def test_parts_from_different_gpus_are_refused(tmp_path):
    part1 = write_part(tmp_path / "1.jsonl", [row("kiln", 8.0)])
    part2 = write_part(tmp_path / "2.jsonl", [row("inductor", 10.0, gpu="NVIDIA H100 80GB HBM3")])
    with pytest.raises(ValueError, match="different GPUs"):
        bench.merge([part1, part2])


def test_a_copy_inside_another_checkout_has_no_commit(tmp_path, monkeypatch):
    # A snapshot of the tree carried inside another checkout once recorded that checkout's commit.
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=k", "-c", "user.email=k@k",
                    "commit", "-q", "--allow-empty", "-m", "outer"], check=True)
    copy = tmp_path / "snapshot"
    copy.mkdir()
    monkeypatch.setattr(bench, "ROOT", copy)
    assert bench.git_commit() is None
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    assert bench.git_commit() is not None
