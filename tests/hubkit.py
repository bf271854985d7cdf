"""Helpers for tests that run the CLI against a local Hub of their own (faults, throttles) or the session's:
recipes for tiny triplets, byte comparisons, and the `own_hub` fixture (registered in conftest.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download

from chatvector.cli import main
from chatvector.localhub import LocalHub
from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet
from tests.conftest import WRITE_TOKEN

RULES = ('coefficients:\n  default: 0.9\n  layers: {"0-1": 0.6, "3": 1.2}\n'
         '  modules:\n    - {match: "norm", value: 0.0}\n    - {match: "mlp.down_proj", value: 0.5}\n'
         )
EOT = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>"}  # the chat template's end-of-turn token, copied from chat


def recipe(tmp_path: Path, repos: dict[str, str], *, target: str | None = None, shard: str = "150KB",
           vectors: bool = False, name: str = "r", arch: str = "llama") -> Path:
    if vectors:  # two vectors from the same pair, weights 0.7 and 0.4: two terms per tensor
        body = (f"vectors:\n  - {{base: {{repo_id: {repos['base']}}}, chat: {{repo_id: {repos['chat']}}}, weight: 0.7}}\n"
                f"  - {{base: {{repo_id: {repos['base']}}}, chat: {{repo_id: {repos['chat']}}}, weight: 0.4}}\n")
    else:
        body = f"base: {{repo_id: {repos['base']}}}\nchat: {{repo_id: {repos['chat']}}}\n"
    special = f'special_tokens: ["{EOT[arch]}"]\n' if arch in EOT else ""
    text = (f"name: Stream Test\n{body}cp: {{repo_id: {repos['cp']}}}\n{RULES}{special}output: {{shard_size: {shard}}}\n"
            + (f"target: {{repo_id: {target}}}\ncard: {{license: mit, language: [ko]}}\n" if target else ""))
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def folder_bytes(folder: Path) -> dict[str, str]:
    """sha256 of every file but the provenance (which records how the run went: its fetch mode's checks)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.name != "chatvector.json"}


def env_for(hub_url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ, HF_ENDPOINT=hub_url, HF_HOME=str(home), HF_TOKEN=WRITE_TOKEN.secret,
               CHATVECTOR_HTTP_BACKOFF="0.05")  # the retries' waits: short, their number as by default
    env["HF_HUB_CACHE"] = str(home / "hub")
    return env


_TRIPLETS: dict[TripletSpec, dict[str, Path]] = {}  # generated once per spec for the tests below


def seed_on(url: str, tmp_path: Path, spec: TripletSpec, prefix: str = "") -> dict[str, str]:
    """The triplet of `spec` (generated once per process) uploaded as alice/{prefix}{role}: {role: repo_id}."""
    api = HfApi(endpoint=url, token=WRITE_TOKEN.secret)
    if spec not in _TRIPLETS:
        _TRIPLETS[spec] = write_triplet(tmp_path / "models", spec)
    folders = _TRIPLETS[spec]
    repos = {role: f"alice/{prefix}{role}" for role in folders}
    for role, folder in folders.items():
        upload_model(api, folder, repos[role])
    return repos


@pytest.fixture
def own_hub(tmp_path, monkeypatch, fast_retries):
    """make(spec, faults, only=(), seed=0) → (hub, repos): the sources seeded on a clean local Hub, then the same
    Hub served again with FAULTS; the in-process CLI's endpoint, HF_HOME and HF cache point there."""
    import huggingface_hub.constants as constants

    hubs: list[LocalHub] = []

    def serve(**knobs) -> LocalHub:
        hub = LocalHub(tmp_path / "hub", tokens=[WRITE_TOKEN], lfs_threshold=64 * 1024, **knobs).start()
        hubs.append(hub)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # as HF_ENDPOINT would set them at import time
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        return hub

    def make(spec: TripletSpec, faults: str | None = None, only: tuple[str, ...] = (), seed: int = 0, **knobs):
        clean = serve()
        repos = seed_on(clean.url, tmp_path, spec)
        clean.stop()
        return serve(faults=faults, faults_only=only, faults_seed=seed, **knobs), repos

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "home" / "hub"))
    make.serve = serve
    yield make
    for hub in hubs:
        hub.stop()


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def published_equals_snapshot(tmp_path: Path, capsys, url: str, repo: str, r: Path) -> None:
    code, _, err = run_main(capsys, "merge", str(r), "--out", str(tmp_path / "snap"), "--fetch", "snapshot")
    assert code == 0, err
    published = Path(snapshot_download(repo, endpoint=url, token=WRITE_TOKEN.secret, cache_dir=tmp_path / "dl"))
    same = folder_bytes(tmp_path / "snap")
    assert {n: h for n, h in folder_bytes(published).items() if n in same} == same
