"""The one Hub client of a command: built when first used, tuned for our downloads only."""

from __future__ import annotations

from huggingface_hub import constants

from chatvector.hub.client import READ_BYTES, connect, tuned_downloads
from tests.conftest import WRITE_TOKEN


def test_download_tuning_applies_inside_the_block_only():
    from httpcore2._sync.http11 import HTTP11Connection

    before = constants.DOWNLOAD_CHUNK_SIZE, HTTP11Connection.READ_NUM_BYTES
    with tuned_downloads():
        assert constants.DOWNLOAD_CHUNK_SIZE is None and HTTP11Connection.READ_NUM_BYTES == READ_BYTES
    assert (constants.DOWNLOAD_CHUNK_SIZE, HTTP11Connection.READ_NUM_BYTES) == before


def test_the_client_is_built_on_first_use_with_the_given_endpoint(hub):
    api = connect(token=WRITE_TOKEN.secret, endpoint=hub.url)
    assert api._api is None  # nothing built, nothing imported for it yet
    assert api.whoami()["name"] == "alice" and api.endpoint == hub.url


def test_a_local_merge_never_builds_a_hub_client(tmp_path, monkeypatch):
    """Sources that are all local folders need no Hub: huggingface_hub's client is never created."""
    import chatvector.hub.client as hub
    from chatvector.cli import main
    from chatvector.testing.tinymodels import TripletSpec, write_triplet

    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    used, real = [], hub.LazyApi.__getattr__
    monkeypatch.setattr(hub.LazyApi, "__getattr__", lambda self, name: used.append(name) or real(self, name))
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out")]) == 0
    assert used == []


def test_a_failed_xet_transfer_is_one_line_naming_the_repository_and_the_status(hub):
    """hf_xet raises RuntimeError once its own retries are spent: that is the Hub's storage failing, not a bug."""
    from chatvector.hub.client import translate

    api = connect()
    down = RuntimeError("Task error: File reconstruction error: CAS Client Error: Request error: HTTP status server "
                        "error (500 Internal Server Error), domain: http://localhost:1/xet-cas/fetch/ab")
    text = str(translate(api, down, "alice/base", action="read"))
    assert text == ("the Hub's Xet storage answered 500 Internal Server Error while downloading from alice/base, "
                    "after hf_xet's retries; run again later (a rerun resumes)")
    up = RuntimeError("Internal error: shard refused: file 1f: sha256 mismatch")
    assert "failed (Internal error: shard refused" in str(translate(api, up, "alice/t", action="push"))
    assert translate(api, RuntimeError("something else entirely"), "alice/t") is None  # a real bug stays one
