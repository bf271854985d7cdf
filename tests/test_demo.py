"""`chatvector demo` (what `make demo` runs): the full offline publish, twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_publishes_loads_chats_and_reruns_as_noop(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HF_")}
    for run in (1, 2):
        result = subprocess.run([sys.executable, "-m", "chatvector", "demo", "--root", str(tmp_path / "demo")],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        out = result.stdout
        assert "[4/5] Loading demo/tiny-llama-ko-chat back from the Hub" in out and "assistant: " in out
        assert "nothing changed: head stays" in out
        if run == 1:
            assert "one commit " in out and "model.safetensors.index.json" in out
        else:
            assert "already published at" in out  # same seeded inputs, so the first publish is a no-op too
    card = (tmp_path / "demo" / "out" / "README.md").read_text()
    assert card.startswith("---\n") and "demo/tiny-llama-cp" in card
    assert "hf_demo_" not in (tmp_path / "demo" / "hub" / "access.log").read_text()
