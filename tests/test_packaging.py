"""Packaging: `python -m headmap` and `headmap --version` say the package's version, and the wheel,
installed with its serve and ray extras into a fresh virtual environment, ships everything the
source tree holds (the interactive views' assets, the C++ kernel sources, py.typed) and runs there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "headmap"
VERSION = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)


def version() -> str:
    assert VERSION is not None, "pyproject.toml has no version"
    return VERSION.group(1)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables that would point another interpreter back here."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    )
    return done.stdout


def test_python_m_headmap_is_the_command_line(tmp_path: Path) -> None:
    env = clean_env(PYTHONPATH=str(ROOT / "src"))
    # The version comes from the installed distribution's metadata, the one pyproject.toml declares.
    assert (
        run([sys.executable, "-m", "headmap", "--version"], tmp_path, env).strip() == f"headmap {version()}"
    )
    helped = run([sys.executable, "-m", "headmap", "--help"], tmp_path, env)
    for command in ("render", "explain", "rag", "bias", "prune", "serve"):
        assert command in helped
    script = Path(sys.executable).parent / "headmap"
    assert run([str(script), "--version"], tmp_path, env).strip() == f"headmap {version()}"


def source_files() -> set[str]:
    """Every file of the package as a wheel names it (headmap/...), caches left out."""
    return {
        p.relative_to(PACKAGE.parent).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def requirement_pins() -> list[str]:
    """requirements.txt as pip constraints (a constraint takes no extras: ``ray[data]`` -> ``ray``)."""
    pins = []
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pins.append(re.sub(r"\[[^\]]*\]", "", line))
    return pins


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_with_serve_and_ray(tmp_path: Path) -> None:
    env = clean_env()
    timings = {}
    start = time.perf_counter()
    # --no-build-isolation: the set-up's pinned setuptools builds it, with nothing downloaded
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            "dist",
        ],
        tmp_path,
        env,
    )
    timings["wheel"] = time.perf_counter() - start
    (wheel,) = (tmp_path / "dist").glob("headmap-*.whl")
    assert wheel.name == f"headmap-{version()}-py3-none-any.whl"
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert source_files() <= shipped, sorted(source_files() - shipped)
    for needed in (
        "headmap/py.typed",
        "headmap/render/assets/heatmap.js",
        "headmap/capture/kernels/fused_stats.cpp",
    ):
        assert needed in shipped

    start = time.perf_counter()
    fresh = tmp_path / "fresh"
    try:
        check_fresh_venv(fresh, wheel, tmp_path, env)
    finally:  # ~1.5 GB (torch, ray, gradio): not kept among pytest's last three runs
        shutil.rmtree(fresh, ignore_errors=True)
    timings["fresh venv"] = time.perf_counter() - start
    print(f"packaging timings (s): {', '.join(f'{k} {v:.0f}' for k, v in timings.items())}")


def check_fresh_venv(fresh: Path, wheel: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """Install ``wheel[serve,ray]`` into a new venv at ``fresh`` and run it there."""
    run([sys.executable, "-m", "venv", str(fresh)], tmp_path, env)
    pip = [str(fresh / "bin" / "python"), "-m", "pip", "install", "-q"]
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(requirement_pins()) + "\n", encoding="utf-8")
    # torch first, pinned, as scripts/setup.sh does: no resolver then reaches for a multi-GB CUDA build.
    torch_pin = next(p for p in requirement_pins() if p.startswith("torch=="))
    run([*pip, torch_pin], tmp_path, env)
    run([*pip, "-c", str(constraints), f"{wheel}[serve,ray]"], tmp_path, env)

    bin_ = fresh / "bin"
    assert run([str(bin_ / "headmap"), "--version"], tmp_path, env).strip() == f"headmap {version()}"
    assert "usage: headmap" in run([str(bin_ / "python"), "-m", "headmap", "--help"], tmp_path, env)
    probe = (
        "import importlib.resources as r, pathlib, headmap, gradio, ray\n"
        "root = r.files('headmap')\n"
        "assert pathlib.Path(headmap.__file__).is_relative_to(pathlib.Path(__import__('sys').prefix))\n"
        "for name in ('py.typed', 'render/assets/heatmap.js', 'render/assets/heatmap.css',\n"
        "             'capture/kernels/fused_stats.cpp', 'capture/kernels/js_pairs.cpp'):\n"
        "    assert root.joinpath(name).is_file(), name\n"
        "from headmap.render.interactive import interactive_html\n"
        "from headmap.serve import app\n"
        "from headmap.analysis.ray_engine import RayEngine\n"
        "print(headmap.__version__, gradio.__version__, ray.__version__)\n"
    )
    versions = run([str(bin_ / "python"), "-c", probe], tmp_path, env).split()
    assert versions[0] == version()
