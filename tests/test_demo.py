"""`chatvector demo` (what `make demo` runs): the full offline publish, twice."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatvector.demo import final_message

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
        url = re.search(r"Local Hub serving .* on (http://127\.0\.0\.1:\d+) ", out).group(1)
        assert out.rstrip().endswith(final_message(url, "demo/tiny-llama-ko-chat", tmp_path / "demo"))
        if run == 1:
            assert "one commit " in out and "model.safetensors.index.json" in out
        else:
            assert "already published at" in out  # same seeded inputs, so the first publish is a no-op too
    card = (tmp_path / "demo" / "out" / "README.md").read_text()
    assert card.startswith("---\n") and "demo/tiny-llama-cp" in card
    assert "hf_demo_" not in (tmp_path / "demo" / "hub" / "access.log").read_text()


def test_final_message_says_the_hub_stopped_and_how_to_serve_it_again(tmp_path):
    """The demo's Hub stops with the demo: no link is given as live, the restart command comes first."""
    root = tmp_path / "my demo"
    text = final_message("http://127.0.0.1:40123", "demo/tiny-llama-ko-chat", root)
    lines = text.splitlines()
    assert lines[0] == f"Done. Published demo/tiny-llama-ko-chat; its card is {root / 'out' / 'README.md'}"
    assert "stopped" in lines[1] and "do not open now" in lines[1]
    restart = f"  chatvector hub serve --root '{root / 'hub'}' --port 40123 --token demo=SECRET:write"
    assert restart in lines
    model = "  Model: http://127.0.0.1:40123/api/models/demo/tiny-llama-ko-chat"
    card = "  Card:  http://127.0.0.1:40123/demo/tiny-llama-ko-chat/resolve/main/README.md"
    assert lines.index(restart) < lines.index(model) and card in lines
