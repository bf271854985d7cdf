"""The one build step pyproject.toml cannot say: the wheel carries files whose source lies outside the package.

The card templates' source is the checkout's top-level templates/ (users edit and review them there) and the demo's
recipe is recipes/demo.yaml; a wheel holds no checkout, so the build copies both into the package
(chatvector/templates/, chatvector/recipes/demo.yaml), where `chatvector.conventions.shipped` finds them. An
editable install reads them from the checkout instead. Everything else is configured in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# top-level source → where the wheel carries it, inside the package
OUTSIDE_THE_PACKAGE = {"templates": "chatvector/templates", "recipes/demo.yaml": "chatvector/recipes/demo.yaml"}


class BuildPyWithTopLevelFiles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the checkout's own files are read in place
            return
        for source, dest in OUTSIDE_THE_PACKAGE.items():
            copy(ROOT / source, Path(self.build_lib) / dest)


def copy(source: Path, dest: Path) -> None:
    if not source.exists():  # a wheel without them fails at its first publish: fail the build instead
        raise FileNotFoundError(f"{source} is missing: the wheel must carry it (see setup.py)")
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest) if source.is_dir() else shutil.copy2(source, dest)


setup(cmdclass={"build_py": BuildPyWithTopLevelFiles})
