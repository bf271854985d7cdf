"""The wheel carries everything a run reads (issue 20, item 5): built from the working tree, installed non-editable
into a fresh virtual environment, and run from a folder outside the checkout against the session's local Hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from pathlib import Path

import pytest

from chatvector.testing.tinymodels import TripletSpec, write_triplet
from tests.conftest import WRITE_TOKEN

ROOT = Path(__file__).resolve().parents[1]
# What a build reads: the package, its configuration and the top-level files setup.py copies into it.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "pipeline", "templates", "recipes/demo.yaml")


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the working tree (a build in the checkout would leave build/ behind)."""
    source = tmp_path / "source"
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")}
                                            if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("chatvector-*.whl")
    return wheel


def fresh_venv_with(wheel: Path, tmp_path: Path) -> Path:
    """A new virtual environment holding only the wheel; its dependencies come from this one's site-packages
    (a .pth file: its editable chatvector, a .pth of its own, is not read from there)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


@pytest.mark.slow
def test_the_installed_wheel_plans_and_dry_runs_a_publish_outside_the_checkout(tmp_path, hub):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "pipeline"
    data = {p.relative_to(package).as_posix() for p in (package / "chatvector").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")}  # page templates, prompt sets, texts
    top_level = {f"chatvector/templates/{p.name}" for p in (ROOT / "templates").iterdir()}  # the card templates
    assert data and data | top_level | {"chatvector/recipes/demo.yaml"} <= names, sorted(data - names)
    venv = fresh_venv_with(wheel, tmp_path)

    work = tmp_path / "elsewhere"  # no checkout above it
    write_triplet(work / "m", TripletSpec(arch="llama"))
    target = f"alice/wheel-{uuid.uuid4().hex[:6]}"
    (work / "r.yaml").write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                                 f"target: {{repo_id: {target}}}\ncard: {{license: mit}}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=WRITE_TOKEN.secret, HF_HOME=str(tmp_path / "hf_home"),
               PATH=f"{venv / 'bin'}:/usr/bin:/bin")

    def chatvector(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["chatvector", *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    where = subprocess.run(["python", "-c", "import chatvector.card.card as c; print(c.__file__); print(c.TEMPLATE_DIR)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the installed copy, not the checkout's
    plan = chatvector("plan", "r.yaml")
    assert plan.returncode == 0, plan.stderr
    dry = chatvector("publish", "r.yaml", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"dry run: would commit to {hub.url}/{target}") and "  + README.md" in dry.stdout
    assert "\n---\n" in dry.stdout and "\nlicense: mit\n" in dry.stdout  # the card the wheel's template rendered
