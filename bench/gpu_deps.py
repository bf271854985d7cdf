"""The runtime and test dependencies bench/gpu_check.sh needs, checked against pyproject.toml's ranges.

    python bench/gpu_deps.py            # one line per package: name, installed version, range, ok/MISSING/OUT OF RANGE
                                        # exit 0 when all are in range; else 1, and the last line lists the
                                        # requirements to install (for pip install --no-index --find-links ...)

torch is checked (its range) but never installed: the GPU image's CUDA build is the one to use.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_NEEDS = ("pytest", "pytest-timeout")  # what gpu_check.sh runs the gpu tests with
NEVER_INSTALL = ("torch",)


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import Version
    return Requirement, Version


def _toml():
    try:
        import tomllib
    except ImportError:  # Python < 3.11: pip vendors tomli
        from pip._vendor import tomli as tomllib
    return tomllib


def requirements() -> list[str]:
    """pyproject.toml's dependencies, then the test dependencies the check uses, as written there."""
    project = _toml().loads((ROOT / "pyproject.toml").read_text())["project"]
    tests = project.get("optional-dependencies", {}).get("test", [])
    wanted = [r for r in tests if re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() in TEST_NEEDS]
    return list(project["dependencies"]) + wanted


def check(reqs: list[str]) -> tuple[list[str], list[str]]:
    """(report lines, requirements to install)."""
    Requirement, Version = _packaging()
    lines, missing = [], []
    for text in reqs:
        req = Requirement(text.split("#")[0].strip())
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            version = None
        ok = version is not None and (not req.specifier or req.specifier.contains(Version(version), prereleases=True))
        state = "ok" if ok else ("MISSING" if version is None else "OUT OF RANGE")
        lines.append(f"{req.name:<18} {version or '-':<14} {str(req.specifier) or 'any':<14} {state}")
        if not ok and req.name not in NEVER_INSTALL:
            missing.append(str(req))
    return lines, missing


def main() -> int:
    lines, missing = check(requirements())
    print(f"python {sys.version.split()[0]} ({sys.executable})")
    print("\n".join(lines))
    bad_torch = any(line.startswith("torch ") and not line.endswith(" ok") for line in lines)
    if bad_torch:
        print("torch is outside pyproject.toml's range: the image's CUDA build cannot be replaced here")
    if missing:
        print("install: " + " ".join(f"'{m}'" for m in missing))
    return 1 if missing or bad_torch else 0


if __name__ == "__main__":
    sys.exit(main())
