"""examples/cpp_deploy: a module saved by kiln.save, loaded and run by a C++ program (LibTorch +
libkiln_runtime.so, no Python), gives the output the module gave in Python before saving."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import kiln
import models  # examples/models.py (conftest puts examples/ on the path)

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "cpp_deploy"


def runtime_library() -> Path:
    """libkiln_runtime.so of the kiln that is imported."""
    if hasattr(kiln, "runtime_library_path"):
        return Path(kiln.runtime_library_path())
    return Path(kiln.__file__).resolve().parent / "libkiln_runtime.so"


@pytest.fixture(scope="module")
def deploy_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example program, configured and built by CMake in a temporary directory."""
    if shutil.which("cmake") is None:
        pytest.fail("cmake is not on PATH; scripts/setup_env.sh installs it")
    library = runtime_library()
    assert library.is_file(), f"{library} is missing: build Kiln first (scripts/setup_env.sh)"
    build_dir = tmp_path_factory.mktemp("cpp_deploy_build")
    torch_cmake_dir = Path(torch.__file__).resolve().parent / "share" / "cmake" / "Torch"
    configure = [
        "cmake",
        "-S",
        str(EXAMPLE_DIR),
        "-B",
        str(build_dir),
        f"-DTorch_DIR={torch_cmake_dir}",
        f"-DKILN_RUNTIME={library}",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    for command in (configure, ["cmake", "--build", str(build_dir)]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    program = build_dir / "kiln_deploy"
    assert program.is_file()
    return program


def run_program(program: Path, *args: str) -> subprocess.CompletedProcess:
    # The program must not rely on Python's environment to find Kiln or torch.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return subprocess.run([str(program), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def saved_small_resnet(tmp_path_factory: pytest.TempPathFactory):
    """Per front end: the path of a SmallResNet compiled and saved with kiln.save, and the
    compiled module."""
    directory = tmp_path_factory.mktemp("cpp_deploy_modules")
    model = models.SmallResNet().eval()
    saved = {}
    for ir in ("ts", "dynamo"):
        example = torch.randn(2, 3, 64, 64)
        compiled = kiln.compile(model, ir=ir, inputs=[example])
        assert kiln.summary(compiled)["engines"] >= 1
        path = directory / f"small_resnet_{ir}.ts"
        kiln.save(compiled, path, inputs=[example])
        saved[ir] = (path, compiled)
    return model, saved


@pytest.mark.parametrize("ir", ["ts", "dynamo"])
def test_cpp_program_gives_pythons_output(deploy_program, saved_small_resnet, ir, tmp_path):
    model, saved = saved_small_resnet
    path, compiled = saved[ir]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    input_path = tmp_path / "input.pt"
    output_path = tmp_path / "output.pt"
    torch.save(x, input_path)

    result = run_program(deploy_program, str(path), "--input", str(input_path), "--output", str(output_path))
    assert result.returncode == 0, result.stderr
    assert "output: shape [2, 10]" in result.stdout

    from_cpp = torch.load(output_path)
    with torch.no_grad():
        from_python = compiled(x)
        eager = model(x)
    scale = eager.abs().max().item()
    torch.testing.assert_close(from_cpp, from_python, rtol=0, atol=1e-6 * scale)
    assert (from_cpp - eager).abs().max().item() <= 1e-4 * scale


def test_cpp_program_generated_input(deploy_program, saved_small_resnet, tmp_path):
    model, saved = saved_small_resnet
    path, _ = saved["dynamo"]
    output_path = tmp_path / "output.pt"
    result = run_program(deploy_program, str(path), "--shape", "2,3,64,64", "--output", str(output_path))
    assert result.returncode == 0, result.stderr

    x = torch.linspace(-1.0, 1.0, 2 * 3 * 64 * 64, dtype=torch.float32).reshape(2, 3, 64, 64)
    with torch.no_grad():
        eager = model(x)
    from_cpp = torch.load(output_path)
    assert (from_cpp - eager).abs().max().item() <= 1e-4 * eager.abs().max().item()


def test_cpp_program_refuses_a_shape_the_engine_was_not_built_for(deploy_program, saved_small_resnet):
    """The engine's input checks reach C++ callers as errors, not crashes."""
    _, saved = saved_small_resnet
    path, _ = saved["dynamo"]
    result = run_program(deploy_program, str(path), "--shape", "2,3,32,32")
    assert result.returncode == 1
    assert "kiln_deploy:" in result.stderr
    assert "kiln engine" in result.stderr and "[2, 3, 64, 64]" in result.stderr


def test_cpp_program_usage_errors(deploy_program, tmp_path):
    result = run_program(deploy_program)
    assert result.returncode == 2
    assert "usage: kiln_deploy" in result.stderr
    result = run_program(deploy_program, str(tmp_path / "missing.ts"), "--shape", "1,3,64,64")
    assert result.returncode == 1
    assert "missing.ts" in result.stderr
