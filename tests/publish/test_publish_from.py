"""`publish --from DIR`: push exactly the bytes `merge` wrote (merge, evaluate, publish those bytes)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, snapshot_download

from chatvector.cli import main
from tests.conftest import WRITE_TOKEN, weight_downloads
from tests.hubkit import recipe, seed_on


@pytest.fixture(scope="module")
def sources_for_from(tmp_path_factory):
    from chatvector.testing.tinymodels import TripletSpec
    from tests.conftest import HUB

    return seed_on(HUB.url, tmp_path_factory.mktemp("from"), TripletSpec(arch="llama", extra_cp_tokens=4),
                   prefix=f"from-{uuid.uuid4().hex[:6]}-")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_from_pushes_the_merged_bytes_without_merging_again(tmp_path, sources_for_from, hub, capsys,
                                                                    monkeypatch, transfer):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/from-{uuid.uuid4().hex[:6]}"
    r = recipe(tmp_path, sources_for_from, target=target)
    assert main(["plan", str(r), "--json"]) == 0
    (tmp_path / "plan.json").write_text(capsys.readouterr().out)
    assert main(["merge", str(r), "--out", str(tmp_path / "m"), "--plan", str(tmp_path / "plan.json")]) == 0
    merged = {p.name: sha(p) for p in (tmp_path / "m").iterdir() if p.name.endswith(".safetensors")}
    mark = len(hub.requests)
    capsys.readouterr()
    assert main(["publish", str(r), "--from", str(tmp_path / "m"), "--plan", str(tmp_path / "plan.json")]) == 0
    assert capsys.readouterr().out.startswith(f"published {target} at ")
    assert weight_downloads(list(hub.requests)[mark:]) == []  # nothing was merged again
    published = Path(snapshot_download(target, token=WRITE_TOKEN.secret, cache_dir=tmp_path / "dl"))
    assert {n: sha(published / n) for n in merged} == merged
    assert {"README.md", "coefficients.svg", "chatvector.json"} <= {p.name for p in published.iterdir()}
    assert not (tmp_path / "m" / "README.md").exists()  # the folder itself is left as it was
    assert main(["publish", str(r), "--from", str(tmp_path / "m")]) == 0  # again: nothing changed
    assert capsys.readouterr().out.startswith("nothing changed:")
    # The card's "How to reproduce" recipe, merged as the card says, gives the published weights.
    card = (published / "README.md").read_text(encoding="utf-8")
    (tmp_path / "pinned.yaml").write_text(card.split("## How to reproduce")[1].split("```yaml\n")[1].split("```")[0])
    assert main(["-q", "merge", str(tmp_path / "pinned.yaml"), "--out", str(tmp_path / "again")]) == 0
    assert tensors(tmp_path / "again") == tensors(published)
    assert {n: sha(tmp_path / "again" / n) for n in merged} == merged  # the shard files too, byte for byte


def tensors(folder: Path) -> dict[str, bytes]:
    from safetensors import safe_open

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                out[name] = (str(t.dtype), tuple(t.shape), t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return out


def test_publish_from_refuses_a_folder_of_another_plan_or_with_changed_bytes(tmp_path, sources_for_from, capsys,
                                                                            monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/from-{uuid.uuid4().hex[:6]}"
    r = recipe(tmp_path, sources_for_from, target=target)
    assert main(["merge", str(r), "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["publish", str(r), "--from", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --from {tmp_path / 'nowhere'}: no chatvector.json there; give "
                                               "the folder `chatvector merge RECIPE --out DIR` wrote")
    other = tmp_path / "other.yaml"
    other.write_text(r.read_text().replace("default: 0.9", "default: 0.7"))
    assert main(["publish", str(other), "--from", str(tmp_path / "m")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --from {tmp_path / 'm'}: it was merged from another plan (fingerprint ")
    shard = sorted((tmp_path / "m").glob("model*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    assert main(["publish", str(r), "--from", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --from {tmp_path / 'm'}: {shard.name} changed since the "
                                               "merge (its sha256 differs from chatvector.json's); merge again")
    assert not HfApi(token=WRITE_TOKEN.secret).repo_exists(target)
