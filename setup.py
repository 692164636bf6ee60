"""Builds Kiln's native parts with CMake and packages them with the Python package.

CMake builds the extension ``kiln._C`` and ``libkiln_runtime.so`` and installs both into the
``kiln`` package directory of the build (``install(TARGETS _C kiln_runtime ...)``). For an
editable install (``pip install -e .``) they are installed into ``py/kiln`` as well, so the source
tree imports them.

Environment variables:
    KILN_CMAKE_BUILD_DIR: the CMake build directory (default ``build/cmake`` in the source tree;
        reused between builds, so a rebuild compiles only what changed).
    KILN_CUDA: ``ON`` or ``OFF`` to force the CUDA backend on or off (default: on when nvcc is
        found).
    KILN_BUILD_TESTS: ``ON`` to also build the GoogleTest suite (default ``OFF``: installing Kiln
        does not need GoogleTest).
    KILN_CMAKE_ARGS: further arguments for the CMake configure step, separated by spaces.
    CMAKE_BUILD_PARALLEL_LEVEL: how many compile jobs run at once (CMake's own variable).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE_DIR = Path(__file__).resolve().parent
PACKAGE_SOURCE_DIR = SOURCE_DIR / "py" / "kiln"


class CMakeExtension(Extension):
    """An extension that CMake builds: setuptools compiles no sources for it."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


def _on_off(variable: str, default: str | None) -> str | None:
    value = os.environ.get(variable, default)
    if value is None:
        return None
    normalized = value.strip().upper()
    if normalized in ("1", "ON", "TRUE", "YES"):
        return "ON"
    if normalized in ("0", "OFF", "FALSE", "NO"):
        return "OFF"
    raise ValueError(f"{variable} must be ON or OFF, got {value!r}")


class CMakeBuild(build_ext):
    """Configures, builds and installs the CMake project into the package directory."""

    def run(self) -> None:
        try:
            subprocess.run(["cmake", "--version"], check=True, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as error:
            raise RuntimeError(
                "building Kiln needs CMake 3.22 or newer on PATH (apt-get install cmake, or "
                f"pip install cmake): {error}"
            ) from error
        for extension in self.extensions:
            self.build_extension(extension)

    def build_extension(self, extension: Extension) -> None:
        build_dir = Path(os.environ.get("KILN_CMAKE_BUILD_DIR", SOURCE_DIR / "build" / "cmake"))
        build_dir = build_dir.resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        # The kiln package directory of this build, from which setuptools makes the wheel.
        package_dir = Path(self.build_lib).resolve().joinpath(*extension.name.split(".")[:-1])
        build_type = "Debug" if self.debug else "Release"

        configure = [
            "cmake",
            "-S",
            str(SOURCE_DIR),
            "-B",
            str(build_dir),
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DKILN_BUILD_TESTS={_on_off('KILN_BUILD_TESTS', 'OFF')}",
        ]
        if not (build_dir / "CMakeCache.txt").exists() and _ninja_available():
            configure += ["-G", "Ninja"]
        cuda = _on_off("KILN_CUDA", None)
        if cuda is not None:
            configure.append(f"-DKILN_CUDA={cuda}")
        configure += shlex.split(os.environ.get("KILN_CMAKE_ARGS", ""))
        build = ["cmake", "--build", str(build_dir), "--config", build_type, "--target", "_C"]
        if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ and self.parallel:
            build += ["--parallel", str(self.parallel)]

        _run(configure)
        _run(build)
        destinations = [package_dir]
        # In place (an editable install, or build_ext --inplace) the source tree imports them too.
        if self.inplace:
            destinations.append(PACKAGE_SOURCE_DIR)
        for destination in destinations:
            _run(["cmake", "--install", str(build_dir), "--config", build_type, "--prefix", str(destination)])


def _ninja_available() -> bool:
    try:
        subprocess.run(["ninja", "--version"], check=True, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def _run(command: list[str]) -> None:
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, check=True)


setup(
    ext_modules=[CMakeExtension("kiln._C")],
    cmdclass={"build_ext": CMakeBuild},
)
