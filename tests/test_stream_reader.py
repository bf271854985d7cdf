"""chatvector.fetch.streaming's StreamReader and RangeClient on their own, against the session's local Hub:
exact bytes in any read order, the window's bound, chunks dropped and fetched again, hash checks, errors."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import torch
from huggingface_hub import HfApi, hf_hub_url
from safetensors.torch import save_file

from chatvector.errors import MergeError
from chatvector.fetch.streaming import RangeClient, RemoteFile, StreamReader
from tests.conftest import WRITE_TOKEN

N_TENSORS = 12
ROWS, COLS = 64, 96  # 12 KiB of fp16 per tensor, 150 KB in all


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """One safetensors file on the Hub, its tensors, and a RemoteFile for it."""
    api = HfApi(token=WRITE_TOKEN.secret)
    folder = tmp_path_factory.mktemp("streamfile")
    g = torch.Generator().manual_seed(7)
    tensors = {f"t{i:02d}": torch.randn(ROWS, COLS, generator=g).to(torch.float16) for i in range(N_TENSORS)}
    save_file(tensors, folder / "w.safetensors")
    repo = f"alice/streaming-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo)
    sha = api.upload_file(path_or_fileobj=str(folder / "w.safetensors"), path_in_repo="w.safetensors",
                          repo_id=repo).oid
    data = (folder / "w.safetensors").read_bytes()
    f = RemoteFile(key=f"hub://{repo}@{sha}/w.safetensors", url=hf_hub_url(repo, "w.safetensors", revision=sha),
                   size=len(data), label=f"cp {repo}: w.safetensors", sha256=hashlib.sha256(data).hexdigest())
    return f, tensors, data


def read_all(reader: StreamReader, f: RemoteFile, order: list[str]) -> dict[str, torch.Tensor]:
    header = reader.header(f.key)
    needed = {name: i for i, name in enumerate(order)}
    opened = reader.open(header, needed)
    out = {}
    for name in order:
        info = header.tensors[name]
        out[name] = opened.tensor(info, 0, info.numel).clone().view(ROWS, COLS)
        opened.release(info.start, info.start + info.numel * info.itemsize)
    return out


def reader_for(f: RemoteFile, **kwargs) -> StreamReader:
    return StreamReader({f.key: f}, client=RangeClient({"authorization": f"Bearer {WRITE_TOKEN.secret}"},
                                                       base_wait=0.01), **kwargs)


def test_file_order_reads_exact_bytes_within_the_window_and_checks_the_hash(remote):
    f, tensors, data = remote
    # the window: the chunks a tensor spans (2-3) and what the 3 connections fetch ahead, with room to spare
    reader = reader_for(f, chunk_bytes=8192, window_bytes=65536, connections=3)
    got = read_all(reader, f, sorted(tensors))
    assert reader.finish() == {f.key: hashlib.sha256(data).hexdigest()}
    assert all(torch.equal(got[n], tensors[n]) for n in tensors)
    s = reader.stats
    assert s.fetched == len(data) and s.refetched == 0  # every byte once, in order
    assert s.peak_window <= 65536
    assert s.requests == -(-len(data) // 8192)  # adjacent tensors share ranges: one request per chunk


def test_a_reverse_order_merge_drops_and_refetches_chunks_and_still_reads_exact_bytes(remote):
    f, tensors, data = remote
    reader = reader_for(f, chunk_bytes=8192, window_bytes=24576, connections=2)
    got = read_all(reader, f, sorted(tensors, reverse=True))  # the file's last tensor first
    reader.finish()
    assert all(torch.equal(got[n], tensors[n]) for n in tensors)
    assert reader.stats.refetched > 0 and reader.stats.peak_window <= 24576


def test_bytes_that_differ_from_the_listing_are_refused_naming_the_file(remote):
    f, tensors, _ = remote
    wrong = RemoteFile(f.key, f.url, f.size, f.label, sha256="0" * 64)
    reader = reader_for(wrong, chunk_bytes=16384)
    read_all(reader, wrong, sorted(tensors))
    with pytest.raises(MergeError, match=r"^cp alice/streaming-\w+: w.safetensors: the bytes read have sha256 "):
        reader.finish()


def test_a_size_that_differs_from_the_listing_is_refused(remote):
    f, _, _ = remote
    client = RangeClient({"authorization": f"Bearer {WRITE_TOKEN.secret}"}, base_wait=0.01)
    with pytest.raises(MergeError, match="serves a .*-byte file but the listing says"):
        client.get(RemoteFile(f.key, f.url, f.size + 1, f.label), 0, 100)


def test_a_missing_file_fails_after_the_retries_with_one_line(remote):
    f, _, _ = remote
    client = RangeClient({"authorization": f"Bearer {WRITE_TOKEN.secret}"}, max_retries=1, base_wait=0.01)
    gone = RemoteFile(f.key, f.url.replace("w.safetensors", "nope.safetensors"), f.size, "cp x: nope.safetensors")
    with pytest.raises(MergeError, match=r"^cp x: nope.safetensors: the Hub answered HTTP 404 to a read of bytes 0-9 "):
        client.get(gone, 0, 10)


def test_close_stops_the_fetchers_of_a_cancelled_merge(remote):
    f, tensors, _ = remote
    reader = reader_for(f, chunk_bytes=4096, window_bytes=8192, connections=2)
    header = reader.header(f.key)
    opened = reader.open(header, {n: i for i, n in enumerate(sorted(tensors))})
    info = header.tensors["t00"]
    opened.tensor(info, 0, 16)  # starts the fetchers; the window fills and they wait
    reader.close()
    assert all(not t.is_alive() for t in reader._threads)
