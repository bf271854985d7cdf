"""Test session setup: one local Hub for the whole session, and a client pointed at it.

huggingface_hub freezes HF_ENDPOINT at import time, so the server starts and the environment is set here,
before any test module imports huggingface_hub or transformers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from chatvector.localhub import LocalHub, Org, Token

WRITE_TOKEN = Token("alice", "hf_alice_write_secret_0123456789", "write")
READ_TOKEN = Token("bob", "hf_bob_read_secret_0123456789", "read")
OTHER_WRITER = Token("carol", "hf_carol_write_secret_0123456789", "write")

# The example recipes' namespaces, seeded by alice (a write member of each); carol and bob belong to none.
# `team` is where alice and carol both write (two users committing to one repo).
SEEDED_ORGS = ("demo", "meta-llama", "beomi", "mistralai", "stabilityai", "yentinglin", "my-org")
SHARED_ORG = "team"

_session_dir = Path(tempfile.mkdtemp(prefix="chatvector-tests-"))
HUB = LocalHub(
    _session_dir / "hub",
    tokens=[WRITE_TOKEN, READ_TOKEN, OTHER_WRITER],
    orgs=[*(Org(name, {WRITE_TOKEN.name: "write"}) for name in SEEDED_ORGS),
          Org(SHARED_ORG, {WRITE_TOKEN.name: "write", OTHER_WRITER.name: "write"})],
    lfs_threshold=256 * 1024,  # small, so tests exercise the LFS path with small files
    multipart_chunk_size=512 * 1024,
    log_file=_session_dir / "hub" / "access.log",
).start()

os.environ.update(
    HF_ENDPOINT=HUB.url,
    HF_HOME=str(_session_dir / "hf_home"),
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    # hf_xet's retries: waits from 50 ms (not 3 s), 30 s at most in all, so a test of a failing CAS ends quickly
    HF_XET_CLIENT_RETRY_BASE_DELAY="50ms",
    HF_XET_CLIENT_RETRY_MAX_DURATION="30s",
    HF_XET_TELEMETRY_ENABLED="false",
    TOKENIZERS_PARALLELISM="false",
)
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_DISABLE_XET", None)  # the client as users have it: uploads through Xet
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)
os.environ.pop("HUGGINGFACE_CO_STAGING", None)

import huggingface_hub  # noqa: E402  (must come after HF_ENDPOINT is set)
import pytest  # noqa: E402
from huggingface_hub import constants as _hf_constants  # noqa: E402

assert _hf_constants.ENDPOINT == HUB.url


@pytest.fixture(scope="session")
def hub() -> LocalHub:
    return HUB


@pytest.fixture
def api() -> huggingface_hub.HfApi:
    return huggingface_hub.HfApi(token=WRITE_TOKEN.secret)


@pytest.fixture
def hub_env(tmp_path) -> dict[str, str]:
    """Environment for a CLI subprocess talking to the session hub with the write token."""
    env = dict(os.environ)
    env.update(HF_TOKEN=WRITE_TOKEN.secret, HF_HOME=str(tmp_path / "hf_home"),
               CHATVECTOR_HTTP_BACKOFF="0.05")  # retries as many as by default, their waits short
    return env


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- tiny models on the session hub ------------------------------------------------------------------------
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# Which tiny architecture stands in for each example recipe's models, and how many tokens its cp adds.
EXAMPLE_MODELS = {
    "demo.yaml": ("llama", 20),
    "llama3-korean.yaml": ("llama", 20),
    "llama2-traditional-chinese.yaml": ("llama", 30),
    "mistral-japanese.yaml": ("mistral", 0),
}


@pytest.fixture(scope="session")
def example_repos(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Seed the session hub with tiny models under every example recipe's repo ids: {recipe: {role: repo_id}}."""
    from chatvector.recipe.recipe import load_recipe
    from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet

    api = huggingface_hub.HfApi(token=WRITE_TOKEN.secret)
    seeded: dict[str, dict[str, str]] = {}
    for name, (arch, extra) in EXAMPLE_MODELS.items():
        folders = write_triplet(tmp_path_factory.mktemp(name), TripletSpec(arch=arch, extra_cp_tokens=extra))
        recipe = load_recipe(RECIPES / name)
        roles = {"base": recipe.vectors[0].base, "chat": recipe.vectors[0].chat, "cp": recipe.cp}
        for role, source in roles.items():
            upload_model(api, folders[role], source.repo_id)
        seeded[name] = {role: source.repo_id for role, source in roles.items()}
    return seeded


def weight_downloads(hub_log) -> list:
    """Requests that started a download of a weight file's bytes, one a file: through LFS a GET of its `/resolve`
    URL without a Range header; through Xet the reconstruction query of its start (only LFS files, which here
    are the weights, are stored with Xet; a reconstruction is named by content, not path)."""
    def starts_a_download(r) -> bool:
        if r.method != "GET":
            return False
        if "/reconstructions/" in r.path:
            return not r.range or r.range.startswith("bytes=0-")
        return r.path.endswith(".safetensors") and not r.range

    return [r for r in hub_log if starts_a_download(r)]


def use_transfer(monkeypatch, transfer: str) -> str:
    """Large files through Xet (hf_xet, as users have it) or Git LFS (`HF_HUB_DISABLE_XET=1`, as older clients),
    in this process (huggingface_hub reads the constant at call time) and in subprocesses (the environment)."""
    assert transfer in ("xet", "lfs"), transfer
    monkeypatch.setattr(_hf_constants, "HF_HUB_DISABLE_XET", transfer == "lfs")
    if transfer == "lfs":
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    else:
        monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)
    return transfer


@pytest.fixture(params=["xet", "lfs"])
def transfer(request, monkeypatch) -> str:
    """The test runs twice: large files through Xet, then through Git LFS; both must give the same results."""
    return use_transfer(monkeypatch, request.param)


@pytest.fixture
def lfs_transfer(monkeypatch) -> str:
    """The Git LFS path only: for tests of its wire requests (Xet's own are tested beside them)."""
    return use_transfer(monkeypatch, "lfs")


def file_uploads(hub_log) -> list:
    """The requests that sent a large file's bytes: an LFS PUT (of a whole object or a part), or a xorb upload."""
    return [r for r in hub_log if (r.method == "PUT" and r.path.startswith("/lfs-upload/"))
            or (r.method == "POST" and r.path.startswith("/xet-cas/v1/xorbs/"))]


def file_registrations(hub_log) -> list:
    """The requests that made uploaded large files known to the Hub: an LFS verify, or a Xet shard upload."""
    return [r for r in hub_log if r.method == "POST" and (r.path.endswith("/info/lfs/objects/verify")
                                                         or r.path in ("/xet-cas/v1/shards", "/xet-cas/v2/shards"))]


@pytest.fixture
def fast_retries(monkeypatch) -> list[float]:
    """huggingface_hub's own retries (1 s doubling to 8 s; Retry-After + 1 s after a 429), 10 ms apart, and
    chatvector's (CHATVECTOR_HTTP_BACKOFF); the list of the waits huggingface_hub asked for."""
    import time
    import types

    import huggingface_hub.file_download as hf_file_download
    import huggingface_hub.utils._http as hf_http

    asked: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        real_sleep(min(seconds, 0.01))

    shim = types.SimpleNamespace(**{k: v for k, v in vars(time).items() if not k.startswith("__")})
    shim.sleep = sleep
    for module in (hf_http, hf_file_download):
        monkeypatch.setattr(module, "time", shim)
    monkeypatch.setenv("CHATVECTOR_HTTP_BACKOFF", "0.01")
    return asked


from tests.hubkit import own_hub  # noqa: E402,F401  (a fixture: a local Hub of a test's own)
