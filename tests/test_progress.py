"""Progress output: one download bar in bytes across every source, ending at the plan's download figure; a
source two vectors share is fetched once; HF_HUB_DISABLE_PROGRESS_BARS (what --quiet sets) silences it."""

from __future__ import annotations

import re
import uuid

import pytest
from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
from tqdm import tqdm as std_tqdm

from tests.conftest import WRITE_TOKEN, weight_downloads
from tests.hubkit import recipe, run_main, seed_on

BAR = re.compile(r"(\w+):\s+\d+%\|[^|]*\|\s*([\d.]+[kMG]?)/([\d.]+[kMG]?)")


@pytest.fixture(scope="module")
def progress_sources(tmp_path_factory):
    from chatvector.testing.tinymodels import TripletSpec
    from tests.conftest import HUB

    return seed_on(HUB.url, tmp_path_factory.mktemp("bars"), TripletSpec(arch="llama", extra_cp_tokens=3),
                   prefix=f"bars-{uuid.uuid4().hex[:6]}-")


@pytest.fixture
def bars(monkeypatch):
    """Bars on, as without HF_HUB_DISABLE_PROGRESS_BARS (the test session sets it, and it has priority)."""
    import sys

    monkeypatch.setattr(sys.modules["huggingface_hub.utils.tqdm"], "HF_HUB_DISABLE_PROGRESS_BARS", None)  # (unset)
    enable_progress_bars()
    yield
    disable_progress_bars()


def test_one_download_bar_in_bytes_across_sources_and_a_shared_source_fetched_once(tmp_path, progress_sources, hub,
                                                                                  capsys, monkeypatch, bars, transfer):
    import huggingface_hub.constants

    from chatvector.hub.client import connect
    from chatvector.plan.planner import make_plan
    from chatvector.recipe.recipe import load_recipe

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))  # nothing cached yet
    r = recipe(tmp_path, progress_sources, vectors=True)  # two vectors: base and chat each named twice
    plan = make_plan(load_recipe(r), connect())
    mark = len(hub.requests)
    code, _, err = run_main(capsys, "merge", str(r), "--out", str(tmp_path / "m"), "--fetch", "snapshot")
    assert code == 0, err
    shown = BAR.findall(err)
    assert {name for name, _, _ in shown} == {"download", "merge"}  # no per-repository or per-file bars
    assert "Fetching" not in err
    last = [(done, total) for name, done, total in shown if name == "download"][-1]
    expected = std_tqdm.format_sizeof(plan.download_bytes, divisor=1000)
    assert last == (expected, expected)  # it ends at its total, the plan's figure
    if transfer == "lfs":  # (Xet downloads are named by content, and hf_xet may serve them from its own caches)
        fetched = [r.path for r in weight_downloads(list(hub.requests)[mark:])]
        assert len(fetched) == len(set(fetched)) == sum(len(f) for f in plan.download_files.values())


def test_quiet_draws_no_bar(tmp_path, progress_sources, capsys, monkeypatch, bars):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    r = recipe(tmp_path, progress_sources)
    disable_progress_bars()  # what `-q` sets (HF_HUB_DISABLE_PROGRESS_BARS=1 before huggingface_hub loads)
    code, _, err = run_main(capsys, "merge", str(r), "--out", str(tmp_path / "m"), "--fetch", "snapshot", "-q")
    assert code == 0, err
    assert BAR.findall(err) == []
