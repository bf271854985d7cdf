"""`chatvector demo` (what `make demo` runs): the full offline publish, twice, ending on the model's page."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from chatvector.demo import chatvector_command, final_message, finish
from chatvector.localhub import LocalHub

ROOT = Path(__file__).resolve().parents[1]


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET of URL."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("GET", parts.path)
        reply = conn.getresponse()
        return reply.status, reply.headers["Content-Type"], reply.read().decode()
    finally:
        conn.close()


def test_demo_publishes_loads_chats_and_reruns_as_noop(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HF_")}
    for run in (1, 2):
        result = subprocess.run([sys.executable, "-m", "chatvector", "demo", "--root", str(tmp_path / "demo")],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                                stdin=subprocess.DEVNULL)  # no terminal: the demo stops at its end
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

    # What the demo printed last opens once its state is served again as it says (same root, same port): the
    # model's page, and on it the card's links to the exact source commits (their paths; the card was written
    # by the first run, on that run's port).
    page = re.search(r"^Model page: (\S+)$", out, re.M).group(1)
    port = int(re.search(r"--port (\d+)$", out, re.M).group(1))
    with LocalHub(tmp_path / "demo" / "hub", port=port) as again:
        assert page == f"{again.url}/demo/tiny-llama-ko-chat"
        status, content_type, html = _get(page)
        assert (status, content_type) == (200, "text/html; charset=utf-8")
        assert "<title>demo/tiny-llama-ko-chat · Local Hub</title>" in html and "data:image/svg+xml;base64," in html
        sources = re.findall(r'href="http://127\.0\.0\.1:\d+(/demo/tiny-llama-cp/tree/[0-9a-f]{40})"', html)
        assert sources and _get(again.url + sources[0])[0] == 200


def test_final_message_gives_the_model_page_and_how_to_serve_it_again(tmp_path):
    """Without a terminal the demo's Hub stops with it: the page's link comes with the command that serves the
    same state on the same address (no token needed to read; `chatvector hub serve` says so)."""
    root = tmp_path / "my demo"
    lines = final_message("http://127.0.0.1:40123", "demo/tiny-llama-ko-chat", root).splitlines()
    assert lines[0] == f"Done. Published demo/tiny-llama-ko-chat; its card is {root / 'out' / 'README.md'}"
    assert lines[1] == "Model page: http://127.0.0.1:40123/demo/tiny-llama-ko-chat"
    assert "stopped" in lines[2]
    assert lines[3] == f"  {chatvector_command()} hub serve --root '{root / 'hub'}' --port 40123"
    assert len(lines) == 4  # `make demo` fits on one screen


def test_the_serve_again_command_works_when_pasted_from_the_checkout(tmp_path, monkeypatch):
    """`make demo` leaves .venv/bin off PATH: the printed command runs as it is, from the checkout, in a plain shell."""
    import os
    import socket

    monkeypatch.chdir(ROOT)
    with socket.socket() as s:  # a free port for the pasted server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = final_message(f"http://127.0.0.1:{port}", "demo/x", tmp_path / "demo").splitlines()[-1].strip()
    assert not line.startswith("chatvector ")  # not on this PATH
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "VIRTUAL_ENV"))} | {"PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(["bash", "-c", line], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = proc.stdout.readline()  # printed once the server listens
        assert first.startswith(f"Serving on http://127.0.0.1:{port}"), first or proc.stderr.read()
        assert _get(f"http://127.0.0.1:{port}/api/models")[0] == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_at_a_terminal_the_demo_serves_the_page_until_enter(tmp_path, capsys, monkeypatch):
    """At a terminal the page stays served while the user looks: the Hub stops only after Enter (or Ctrl-C), and
    then the demo says how to serve it again. Paths under the working directory are shown relative to it."""
    monkeypatch.chdir(tmp_path)
    seen = []
    finish("http://127.0.0.1:40123", "demo/tiny-llama-ko-chat", tmp_path / ".demo", at_terminal=True,
           wait=lambda: seen.append(capsys.readouterr().out))
    assert seen == ["\nDone. Published demo/tiny-llama-ko-chat; its card is .demo/out/README.md\n"
                    "Serving the model page at http://127.0.0.1:40123/demo/tiny-llama-ko-chat — press Enter or "
                    "Ctrl-C to stop\n"]
    assert capsys.readouterr().out == ("Stopped. To browse it again, serve the same state on the same address:\n"
                                       f"  {chatvector_command()} hub serve --root .demo/hub --port 40123\n")
