"""Sources that lie: corrupt safetensors headers, an index that disagrees with its shards, file names that point
elsewhere. Each is refused at plan time, before any weight byte moves, with one line naming the role (the recipe
field), the source (repo@sha or folder) and the file; the merge engine's own parser (snapshot and stream mode)
applies the same checks."""

from __future__ import annotations

import json
import shutil
import struct
import uuid
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from chatvector.cli import main
from chatvector.errors import MergeError
from chatvector.plan.sources import MAX_HEADER_BYTES, bad_file_name, check_safetensors_header
from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet
from tests.conftest import HUB, WRITE_TOKEN, weight_downloads

INDEX = "model.safetensors.index.json"


# -- crafted files -----------------------------------------------------------------------------------------------
def st(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file: the 8-byte length (`length`, or the header's own), the header, the data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def t(begin: int, end: int, dtype: str = "F32", shape: list | None = None) -> dict:
    """A header entry; the shape defaults to the F32 elements the offsets span."""
    return {"dtype": dtype, "shape": [(end - begin) // 4] if shape is None else shape, "data_offsets": [begin, end]}


_SIZE = len(st({"a": t(0, 16)}, bytes(16)))
GOOD = st({"__metadata__": {"format": "pt"}, "a": t(0, 16), "b": t(16, 24)}, bytes(24))

# (id, file bytes, what the one line says is wrong)
HEADER_CASES = [
    ("bad-json", st(b"{not json"), "header is not valid JSON (Expecting property name enclosed in double quotes: "
                                   "line 1 column 2 (char 1)); the file is corrupt"),
    ("not-an-object", st(b"[1, 2]"), "header is not a JSON object; the file is corrupt"),
    ("not-utf8", st(b'{"\xff": 1}'), "header is not valid JSON ('utf-8' codec can't decode byte 0xff in position 2: "
                                     "invalid start byte); the file is corrupt"),
    ("length-2-62", st(b"{}", length=1 << 62), f"not a safetensors file (header length {1 << 62} is over the "
                                               f"{MAX_HEADER_BYTES}-byte limit of the safetensors format)"),
    ("length-past-the-file", st({"a": t(0, 16)}, bytes(16), length=200),
     f"not a safetensors file (header length 200 does not fit in the file's {_SIZE} bytes); the file may be "
     "truncated or not safetensors at all"),
    ("claims-50-MB", st({"a": t(0, 16)}, bytes(16), length=50_000_000),
     f"not a safetensors file (header length 50000000 does not fit in the file's {_SIZE} bytes); the file may be "
     "truncated or not safetensors at all"),
    ("too-short", b"\x05\x00\x00", "not a safetensors file (3 bytes, too short for a header)"),
    ("overlapping-offsets", st({"a": t(0, 16), "b": t(8, 24)}, bytes(24)),
     "tensors 'a' (bytes [0, 16)) and 'b' (bytes [8, 24)) overlap; the file is corrupt"),
    ("same-bytes-twice", st({"a": t(0, 16), "b": t(0, 16)}, bytes(16)),
     "tensors 'a' (bytes [0, 16)) and 'b' (bytes [0, 16)) overlap; the file is corrupt"),
    ("gap-between-tensors", st({"a": t(0, 16), "b": t(20, 28)}, bytes(28)),
     "bytes [16, 20) of the data section, before tensor 'b', belong to no tensor; the file is corrupt"),
    ("bytes-after-the-tensors", st({"a": t(0, 16)}, bytes(20)),
     "bytes [16, 20) at the end of the data section belong to no tensor; the file is corrupt"),
    ("offsets-beyond-the-file", st({"a": t(0, 16), "b": t(16, 64)}, bytes(24)),
     "tensor 'b' lies at bytes [16, 64) but the data section has 24 bytes; the file is truncated or corrupt"),
    ("dtype-times-shape", st({"a": t(0, 12, shape=[2, 2])}, bytes(12)),
     "tensor 'a' (F32 [2, 2]) should take 16 bytes but its offsets span 12"),
    ("unknown-dtype", st({"a": t(0, 16, dtype="F33")}, bytes(16)), "tensor 'a' has unknown dtype 'F33'"),
    ("negative-dimension", st({"a": t(0, 16, shape=[-4, -1])}, bytes(16)),
     "tensor 'a' has a malformed shape [-4, -1] (a list of non-negative integers is needed)"),
    ("three-offsets", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}}, bytes(16)),
     "tensor 'a' has malformed data_offsets [0, 8, 16] (two non-negative integers are needed)"),
    ("entry-without-offsets", st({"a": {"dtype": "F32", "shape": [4]}}, bytes(16)),
     "tensor 'a' has a malformed header entry (it needs dtype, shape and data_offsets): {'dtype': 'F32', "
     "'shape': [4]}"),
    ("tensor-named-twice", st(b'{"a": ' + json.dumps(t(0, 16)).encode() + b', "a": ' + json.dumps(t(16, 32)).encode()
                              + b"}", bytes(32)), "header names 'a' twice; the file is corrupt"),
    ("metadata-not-strings", st({"__metadata__": {"step": 3}, "a": t(0, 16)}, bytes(16)),
     "header's __metadata__ is not an object of strings; the file is corrupt"),
]
HEADER_IDS = [c[0] for c in HEADER_CASES]


# -- sources on the session Hub, and local folders -----------------------------------------------------------------
@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> dict:
    """A tiny llama triplet: its folders, and base, chat and cp on the Hub."""
    folders = write_triplet(tmp_path_factory.mktemp("checks"), TripletSpec(arch="llama"))
    api = HfApi(token=WRITE_TOKEN.secret)
    tag = uuid.uuid4().hex[:8]
    repos = {role: f"alice/checks-{role}-{tag}" for role in folders}
    for role, folder in folders.items():
        upload_model(api, folder, repos[role])
    return {"folders": folders, "repos": repos, "config": (folders["cp"] / "config.json").read_bytes()}


def hub_source(llama: dict, files: dict[str, bytes]) -> str:
    """A new repository holding cp's config.json and `files`; returns `repo@sha`."""
    api = HfApi(token=WRITE_TOKEN.secret)
    repo = f"alice/corrupt-{uuid.uuid4().hex[:10]}"
    api.create_repo(repo)
    info = api.create_commit(repo, [CommitOperationAdd(name, data) for name, data in
                                    {"config.json": llama["config"], **files}.items()], commit_message="crafted")
    return f"{repo}@{info.oid}"


def local_source(tmp_path: Path, files: dict[str, bytes], config: bytes) -> Path:
    folder = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    for name, data in {"config.json": config, **files}.items():
        (folder / name).write_bytes(data)
    return folder


def recipe(tmp_path: Path, llama: dict, **roles: str) -> Path:
    """base, chat and cp (lines 1, 2 and 3): the good Hub triplet unless a role is given ("{repo_id: x}")."""
    values = {role: f"{{repo_id: {repo}}}" for role, repo in llama["repos"].items()} | roles
    path = tmp_path / "r.yaml"
    path.write_text("".join(f"{role}: {values[role]}\n" for role in ("base", "chat", "cp")))
    return path


def repo_id(source: str) -> str:
    return f"{{repo_id: {source.split('@')[0]}}}"


def run(capsys, monkeypatch, *args: str) -> tuple[int, list[str]]:
    """The CLI in-process; whatever it finds, it must not trace back nor ask for a weight byte."""
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    capsys.readouterr()
    mark = len(HUB.requests)
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert weight_downloads(list(HUB.requests)[mark:]) == []
    return code, err.strip().splitlines()


# -- headers, at plan time -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, problem", [c[1:] for c in HEADER_CASES], ids=HEADER_IDS)
def test_a_corrupt_header_on_the_hub_is_one_line(tmp_path, capsys, monkeypatch, llama, content, problem):
    source = hub_source(llama, {"model.safetensors": content})
    r = recipe(tmp_path, llama, cp=repo_id(source))
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2
    assert lines == [f"error: {r}:3: cp.repo_id: {source}: model.safetensors: {problem}"]


@pytest.mark.parametrize("content, problem", [c[1:] for c in HEADER_CASES], ids=HEADER_IDS)
def test_a_corrupt_header_in_a_local_folder_is_the_same_line(tmp_path, capsys, monkeypatch, llama, content, problem):
    folder = local_source(tmp_path, {"model.safetensors": content}, llama["config"])
    r = recipe(tmp_path, llama, chat=f"{{path: {folder}}}")
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2
    assert lines == [f"error: {r}:2: chat.path: {folder}: model.safetensors: {problem}"]


def test_merge_refuses_a_corrupt_source_before_any_download(tmp_path, capsys, monkeypatch, llama):
    source = hub_source(llama, {"model.safetensors": st({"a": t(0, 16), "b": t(8, 24)}, bytes(24))})
    r = recipe(tmp_path, llama, base=repo_id(source))
    code, lines = run(capsys, monkeypatch, "merge", str(r), "--out", str(tmp_path / "out"))
    assert code == 2 and lines == [f"error: {r}:1: base.repo_id: {source}: model.safetensors: tensors 'a' (bytes "
                                   "[0, 16)) and 'b' (bytes [8, 24)) overlap; the file is corrupt"]
    assert not (tmp_path / "out").exists()


def test_every_bad_file_of_every_source_is_listed_at_once(tmp_path, capsys, monkeypatch, llama):
    shards = {"model-00001-of-00002.safetensors": st(b"{oops"),
              "model-00002-of-00002.safetensors": st({"a": t(0, 16, dtype="Q8")}, bytes(16)),
              INDEX: json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                "b": "model-00002-of-00002.safetensors"}}).encode()}
    base = hub_source(llama, shards)
    cp = local_source(tmp_path, {"model.safetensors": st({"a": t(0, 8)}, bytes(16))}, llama["config"])
    r = recipe(tmp_path, llama, base=repo_id(base), cp=f"{{path: {cp}}}")
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2
    assert lines == [
        f"error: {r}:1: base.repo_id: {base}: model-00001-of-00002.safetensors: header is not valid JSON (Expecting "
        "property name enclosed in double quotes: line 1 column 2 (char 1)); the file is corrupt",
        f"error: {r}:1: base.repo_id: {base}: model-00002-of-00002.safetensors: tensor 'a' has unknown dtype 'Q8'",
        f"error: {r}:3: cp.path: {cp}: model.safetensors: bytes [8, 16) at the end of the data section belong to no "
        "tensor; the file is corrupt",
    ]


def test_a_header_longer_than_the_probe_is_read_with_a_second_range(tmp_path, capsys, monkeypatch, llama):
    """A valid 150 kB header (over the first range request's 100 kB) is read whole, then checked."""
    header = {"__metadata__": {"pad": "x" * 150_000}, "a": t(0, 16), "b": t(8, 24)}
    source = hub_source(llama, {"model.safetensors": st(header, bytes(24))})
    r = recipe(tmp_path, llama, cp=repo_id(source))
    mark = len(HUB.requests)
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2 and lines[0].endswith("tensors 'a' (bytes [0, 16)) and 'b' (bytes [8, 24)) overlap; the file "
                                           "is corrupt")
    ranges = [q.range for q in list(HUB.requests)[mark:] if q.path.endswith("/model.safetensors")]
    assert len(ranges) == 2 and all(ranges)


# -- the index against the shards -----------------------------------------------------------------------------------
S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
SHARDS = {S1: st({"a": t(0, 16)}, bytes(16)), S2: st({"b": t(0, 8), "c": t(8, 16)}, bytes(16))}
INDEX_CASES = [
    ("maps-a-tensor-to-the-wrong-shard", SHARDS, {"a": S2, "b": S1, "c": S2},
     f"'a' is mapped to {S2} but is in {S1}; 'b' is mapped to {S1} but is in {S2}"),
    ("names-a-missing-tensor", SHARDS, {"a": S1, "b": S2, "c": S2, "d": S2},
     f"'d' is mapped to {S2}, which does not have it"),
    ("misses-a-shard-tensor", SHARDS, {"a": S1, "b": S2}, f"'c' is in {S2} but not in the index"),
    ("a-tensor-in-two-shards", {**SHARDS, S1: st({"a": t(0, 16), "c": t(16, 24)}, bytes(24))},
     {"a": S1, "b": S2, "c": S2}, f"'c' is mapped to {S2} but {S1} has it too"),
]


@pytest.mark.parametrize("shards, weight_map, problem", [c[1:] for c in INDEX_CASES], ids=[c[0] for c in INDEX_CASES])
def test_an_index_that_disagrees_with_its_shards_is_refused(tmp_path, capsys, monkeypatch, llama, shards, weight_map,
                                                             problem):
    files = {**shards, INDEX: json.dumps({"metadata": {}, "weight_map": weight_map}).encode()}
    source = hub_source(llama, files)
    r = recipe(tmp_path, llama, cp=repo_id(source))
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2
    assert lines == [f"error: {r}:3: cp.repo_id: {source}: {INDEX} does not match the shards' headers: {problem}"]
    folder = local_source(tmp_path, files, llama["config"])  # a local folder: the same check
    r = recipe(tmp_path, llama, cp=f"{{path: {folder}}}")
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2
    assert lines == [f"error: {r}:3: cp.path: {folder}: {INDEX} does not match the shards' headers: {problem}"]


# -- file names ------------------------------------------------------------------------------------------------------
BAD_NAMES = [
    ("dot-dot", "../../evil.safetensors", "has a '..' segment (it would point outside the repository)"),
    ("inner-dot-dot", "sub/../../x.safetensors", "has a '..' segment (it would point outside the repository)"),
    ("absolute", "/abs/path.safetensors", "is absolute"),
    ("drive", "C:/x.safetensors", "is absolute"),
    ("backslash", "..\\..\\x.safetensors", "has a backslash (a path separator on Windows; the Hub separates folders "
                                           "with '/')"),
    ("nul", "model\x00.safetensors", "has a NUL byte"),
    ("escape-code", "\x1b[2Jmodel.safetensors", "has a control character ('\\x1b')"),
    ("newline", "model\n.safetensors", "has a control character ('\\n')"),
    ("empty", "", "is empty"),
]


@pytest.mark.parametrize("name, why", [c[1:] for c in BAD_NAMES], ids=[c[0] for c in BAD_NAMES])
def test_a_weight_map_entry_that_is_not_a_plain_name_is_refused(tmp_path, capsys, monkeypatch, llama, name, why):
    index = json.dumps({"weight_map": {"a": S1, "b": name, "c": name}}).encode()
    source = hub_source(llama, {S1: SHARDS[S1], INDEX: index})
    r = recipe(tmp_path, llama, cp=repo_id(source))
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2
    assert lines == [f"error: {r}:3: cp.repo_id: {source}: {INDEX} maps 'b' (and 1 more tensor) to {name!r}: "
                     f"the name {why}"]


def test_every_bad_weight_map_entry_of_a_local_folder_is_listed(tmp_path, capsys, monkeypatch, llama):
    index = {"weight_map": {"a": "../cp/model.safetensors", "b": "/etc/passwd", "c": S1}}
    folder = local_source(tmp_path, {S1: SHARDS[S1], INDEX: json.dumps(index).encode()}, llama["config"])
    r = recipe(tmp_path, llama, base=f"{{path: {folder}}}")
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2
    assert lines == [
        f"error: {r}:1: base.path: {folder}: {INDEX} maps 'a' to '../cp/model.safetensors': the name has a '..' "
        "segment (it would point outside the repository)",
        f"error: {r}:1: base.path: {folder}: {INDEX} maps 'b' to '/etc/passwd': the name is absolute",
    ]


@pytest.fixture
def listing_with(monkeypatch):
    """listing_with(repo, *names): the Hub's listing of `repo` also names these files. No Hub stores such names (the
    local Hub refuses them as the Hub does); a hostile or broken server need not."""
    import chatvector.plan.sources as sources

    real = sources.hub_listing

    def add(repo: str, *names: str) -> None:
        def listing(info):
            extra = {n: sources.RepoFile(n, 10, None, "0" * 40) for n in names} if info.id == repo else {}
            return {**real(info), **extra}

        monkeypatch.setattr(sources, "hub_listing", listing)

    return add


def test_listed_files_the_run_would_read_with_bad_names_are_refused(tmp_path, capsys, monkeypatch, llama,
                                                                     listing_with):
    """Tokenizer files (`*.tiktoken`) are read and copied, and a `..` or absolute name is read wherever it points
    (the cache folder joined with it lies elsewhere): each is refused, one line each, before anything is
    downloaded. A badly named file the run never reads is no problem."""
    source = hub_source(llama, {"model.safetensors": GOOD})
    names = ["..\\..\\evil.tiktoken", "tok\x07.tiktoken", "../../../../etc/hostname", "/etc/passwd"]
    listing_with(source.split("@")[0], *names, "docs/notes\\old.md", "docs/\x1b.md")
    r = recipe(tmp_path, llama, cp=repo_id(source))
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2
    whys = ["has a backslash (a path separator on Windows; the Hub separates folders with '/')",
            "has a control character ('\\x07')",
            "has a '..' segment (it would point outside the repository)",
            "is absolute"]
    assert lines == [f"error: {r}:3: cp.repo_id: {source}: refusing to read {name!r} from the repository's listing: "
                     f"the name {why}" for name, why in zip(names, whys)]


def test_bad_file_name():
    for good in ("model.safetensors", "sub/dir/tokenizer.json", "a..b.safetensors", "ü.json"):
        assert bad_file_name(good) is None, good
    assert bad_file_name("a//b") == "has an empty or '.' segment"
    assert bad_file_name("./a") == "has an empty or '.' segment"
    assert bad_file_name("a\x85b") == "has a control character ('\\x85')"


# -- the library's opinion on a local file our checks pass ------------------------------------------------------------
def test_what_the_safetensors_library_refuses_in_a_local_folder_is_one_line(tmp_path, capsys, monkeypatch, llama):
    import safetensors

    def refuse(path, framework):
        raise safetensors.SafetensorError("Error while deserializing header: something new\nsecond line")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    folder = local_source(tmp_path, {"model.safetensors": GOOD}, llama["config"])
    r = recipe(tmp_path, llama, cp=f"{{path: {folder}}}")
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 2 and lines == [f"error: {r}:3: cp.path: {folder}: model.safetensors: the safetensors library "
                                   "cannot read it: Error while deserializing header: something new"]


# -- the engine's parser: the same checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("content, problem", [c[1:] for c in HEADER_CASES], ids=HEADER_IDS)
def test_parse_header_applies_the_same_checks(tmp_path, content, problem):
    from chatvector.merge.safetensors_io import read_header

    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(MergeError) as e:
        read_header(path)
    assert str(e.value) == f"{path}: {problem}"


def test_parse_header_of_a_good_file():
    from chatvector.merge.safetensors_io import parse_header

    content = st({"__metadata__": None, "b": t(16, 24), "z": t(16, 16, shape=[0, 3]), "a": t(0, 16, "BF16", [2, 4])},
                 bytes(24))
    header = parse_header("mem", len(content), lambda start, n: content[start:start + n])
    data = len(content) - 24
    assert list(header.tensors) == ["a", "z", "b"]  # in the order of their bytes
    assert [(i.dtype, i.shape, i.start) for i in header.tensors.values()] == [
        ("BF16", (2, 4), data), ("F32", (0, 3), data + 16), ("F32", (2,), data + 16)]
    assert check_safetensors_header(len(GOOD), lambda start, n: GOOD[start:start + n])["b"].begin == 16


def test_parse_header_never_reads_an_absurd_header(tmp_path):
    from chatvector.merge.safetensors_io import parse_header

    reads = []

    def read(start, n):
        reads.append((start, n))
        return struct.pack("<Q", 1 << 62)[start:start + n]

    with pytest.raises(MergeError, match="is over the 100000000-byte limit"):
        parse_header("hub://x@1/model.safetensors", 1 << 40, read)
    assert reads == [(0, 8)]


def test_the_engine_refuses_overlapping_inputs(tmp_path):
    from chatvector.merge import TensorJob, TensorSource, run_merge

    (tmp_path / "cp.safetensors").write_bytes(st({"a": t(0, 16), "b": t(8, 24)}, bytes(24)))
    job = TensorJob("a", (4,), "float32", TensorSource(tmp_path / "cp.safetensors", "a"), ())
    with pytest.raises(MergeError) as e:
        run_merge([job], tmp_path / "out", shard_size=1 << 30, progress=False)
    assert str(e.value) == (f"{tmp_path / 'cp.safetensors'}: tensors 'a' (bytes [0, 16)) and 'b' (bytes [8, 24)) "
                            "overlap; the file is corrupt")
    assert not (tmp_path / "out").exists()


def test_stream_mode_reads_headers_through_the_same_checks(llama):
    from huggingface_hub import hf_hub_url

    from chatvector.fetch.streaming import RemoteFile, StreamReader

    content = st({"a": t(0, 16), "b": t(20, 28)}, bytes(28))
    source = hub_source(llama, {"model.safetensors": content})
    repo, sha = source.split("@")
    key = f"hub://{source}/model.safetensors"
    remote = RemoteFile(key, hf_hub_url(repo, "model.safetensors", revision=sha), len(content), "cp")
    reader = StreamReader({key: remote}, headers={"authorization": f"Bearer {WRITE_TOKEN.secret}"})
    with pytest.raises(MergeError) as e:
        reader.header(key)
    assert str(e.value) == f"{key}: bytes [16, 20) of the data section, before tensor 'b', belong to no tensor; " \
                           "the file is corrupt"


def test_real_sharded_checkpoints_still_plan(tmp_path, capsys, monkeypatch, llama):
    """The checks pass real checkpoints: the tiny triplet's sharded folders (with their index) plan as before."""
    for role, folder in llama["folders"].items():
        shutil.copytree(folder, tmp_path / role)
    r = tmp_path / "r.yaml"
    r.write_text(f"base: {{path: {tmp_path / 'base'}}}\nchat: {{path: {tmp_path / 'chat'}}}\n"
                 f"cp: {{path: {tmp_path / 'cp'}}}\n")
    code, lines = run(capsys, monkeypatch, "plan", str(r))
    assert code == 0, lines
