"""The local Hub's Xet storage, driven by the stock huggingface_hub + hf_xet client (Xet on, nothing set but the
endpoint and a token) and, for what a client never sends, by raw requests: hashing and formats against the
client's own bytes, both storage paths downloading either way, `/resolve` redirects with Range, and every
malformed or unauthorized CAS request refused with a 4xx, nothing stored, the server still serving."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from pathlib import Path

import httpx2
import lz4.frame
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

from chatvector.localhub import LocalHub
from chatvector.localhub.xet import hashes, shard, xorb
from chatvector.localhub.xet.xorb import XetFormatError
from chatvector.testing.tinymodels import TripletSpec
from tests.conftest import WRITE_TOKEN, file_registrations, file_uploads, use_transfer
from tests.hubkit import recipe, run_main

BIG = 300 * 1024  # above the session Hub's LFS threshold: a large file


def new_repo(api: HfApi) -> str:
    repo_id = f"alice/xet-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    return repo_id


def xet_token(hub: LocalHub, repo_id: str, scope: str = "write", secret: str = WRITE_TOKEN.secret) -> dict:
    reply = httpx2.get(f"{hub.url}/api/models/{repo_id}/xet-{scope}-token/main",
                       headers={"Authorization": f"Bearer {secret}"})
    assert reply.status_code == 200, reply.text
    return reply.json()


def cas(token: dict, method: str, path: str, **kw) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token['accessToken']}", **kw.pop("headers", {})}
    return httpx2.request(method, f"{token['casUrl']}{path}", headers=headers, timeout=30, **kw)


def make_xorb(chunks: list[bytes], scheme: int = xorb.LZ4) -> tuple[str, bytes]:
    """A serialized xorb of CHUNKS (each compressed with SCHEME) and its CAS hex name."""
    body = b""
    for data in chunks:
        packed = lz4.frame.compress(data) if scheme == xorb.LZ4 else data
        body += bytes([0]) + len(packed).to_bytes(3, "little") + bytes([scheme]) + len(data).to_bytes(3, "little")
        body += packed
    name = hashes.hex_of(hashes.xorb_hash([(hashes.chunk_hash(c), len(c)) for c in chunks]))
    return name, body


def make_shard(files: list[tuple[bytes, list[tuple[str, int, int, int, bytes]], bytes]], xorbs=()) -> bytes:
    """A shard upload: FILES as (file hash, terms (xorb hex, chunk start, end, size, verification), sha256)."""
    out = shard.HEADER_TAG + struct.pack("<QQ", shard.HEADER_VERSION, 0)
    for file_hash, terms, sha in files:
        out += file_hash + struct.pack("<II", shard.WITH_VERIFICATION | shard.WITH_METADATA_EXT, len(terms)) + bytes(8)
        for name, start, end, size, _ in terms:
            out += hashes.hash_of_hex(name) + struct.pack("<IIII", 0, size, start, end)
        for *_, check in terms:
            out += check + bytes(16)
        out += sha + bytes(16)
    out += shard.BOOKEND + bytes(16)
    for name, chunk_hashes in xorbs:
        out += hashes.hash_of_hex(name) + struct.pack("<IIII", 0, len(chunk_hashes), 0, 0)
        for h in chunk_hashes:
            out += h + bytes(16)
    return out + shard.BOOKEND + bytes(16)


def file_of(chunks: list[bytes], name: str) -> tuple[bytes, list, bytes]:
    """A shard's file entry for the whole xorb NAME made of CHUNKS, with correct hashes."""
    leaves = [(hashes.chunk_hash(c), len(c)) for c in chunks]
    check = hashes.verification_hash([h for h, _ in leaves])
    sha = hashlib.sha256(b"".join(chunks)).digest()
    raw_sha = hashes.hash_of_hex(sha.hex())  # stored as a hash is: four little-endian words
    return hashes.file_hash(leaves), [(name, 0, len(chunks), sum(map(len, chunks)), check)], raw_sha


# -- formats ---------------------------------------------------------------------------------------------------
def test_hash_text_form_is_the_specs():
    """The spec's example: each 8-byte word printed as a little-endian u64."""
    h = bytes(range(32))
    assert hashes.hex_of(h) == "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    assert hashes.hash_of_hex(hashes.hex_of(h)) == h
    with pytest.raises(ValueError):
        hashes.hash_of_hex("xyz")


def test_byte_grouped_chunks_decompress_to_their_bytes():
    for n in (0, 1, 2, 3, 4, 5, 6, 7, 1001):
        data = os.urandom(n)
        grouped = b"".join(data[lane::4] for lane in range(4))  # the four byte lanes, in order
        assert xorb.decompress(xorb.BG4_LZ4, lz4.frame.compress(grouped), n) == data


def test_a_xorb_parses_only_under_its_own_hash():
    chunks = [os.urandom(1000), b"a" * 5000, os.urandom(70_000)]
    name, body = make_xorb(chunks)
    index = xorb.parse(body, hashes.hash_of_hex(name))
    assert [c.size for c in index.chunks] == [len(c) for c in chunks] and index.data_end == len(body)
    assert xorb.unpack(body) == b"".join(chunks)
    with pytest.raises(XetFormatError, match="hash mismatch"):
        xorb.parse(body, bytes(32))
    with pytest.raises(XetFormatError, match="claims"):
        xorb.parse(body[:-10], hashes.hash_of_hex(name))
    bad = bytearray(body)
    bad[4] = 9  # an unknown compression scheme
    with pytest.raises(XetFormatError, match="scheme"):
        xorb.parse(bytes(bad), hashes.hash_of_hex(name))


# -- the stock client, Xet on ---------------------------------------------------------------------------------
def test_stock_client_uploads_and_downloads_through_xet(api, hub, tmp_path):
    """upload_folder with hf_xet: the weights go to the CAS (xorbs, then a shard), the listing names their Xet
    hash, hf_hub_download and snapshot_download rebuild them from the CAS, and a ranged GET of `/resolve`
    (through its redirect) gives the exact bytes."""
    repo_id = new_repo(api)
    files = {"config.json": b'{"a": 1}', "model.safetensors": os.urandom(BIG) + bytes(BIG),
             "sub/w.bin": os.urandom(2 * BIG)}
    folder = tmp_path / "up"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    mark = len(hub.requests)
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    log = list(hub.requests)[mark:]
    assert file_uploads(log) and all(r.path.startswith("/xet-cas/") for r in file_uploads(log))
    assert not any("/lfs" in r.path for r in log)
    tree = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True, expand=True) if hasattr(e, "size")}
    assert tree["config.json"].xet_hash is None
    for name in ("model.safetensors", "sub/w.bin"):
        assert tree[name].lfs.sha256 == hashlib.sha256(files[name]).hexdigest()
        assert len(tree[name].xet_hash) == 64
    info = api.get_paths_info(repo_id, ["sub/w.bin"], expand=True)[0]
    assert info.xet_hash == tree["sub/w.bin"].xet_hash

    mark = len(hub.requests)
    for name, data in files.items():
        assert Path(hf_hub_download(repo_id, name, token=WRITE_TOKEN.secret, cache_dir=tmp_path / "c")).read_bytes() == data
    assert any("/reconstructions/" in r.path for r in list(hub.requests)[mark:])  # rebuilt from the CAS
    snap = Path(snapshot_download(repo_id, token=WRITE_TOKEN.secret, cache_dir=tmp_path / "s"))
    assert all((snap / n).read_bytes() == d for n, d in files.items())

    url = f"{hub.url}/{repo_id}/resolve/main/sub/w.bin"
    auth = {"Authorization": f"Bearer {WRITE_TOKEN.secret}"}
    head = httpx2.head(url, headers=auth)
    assert head.status_code == 302 and head.headers["X-Xet-Hash"] == tree["sub/w.bin"].xet_hash
    assert 'rel="xet-auth"' in head.headers["Link"] and head.headers["X-Linked-Size"] == str(2 * BIG)
    ranged = httpx2.get(url, headers={**auth, "Range": "bytes=1000-1999"}, follow_redirects=True)
    assert ranged.status_code == 206 and ranged.content == files["sub/w.bin"][1000:2000]
    assert ranged.request.url.host == "localhost" and "authorization" not in ranged.request.headers


@pytest.mark.parametrize("stored, fetched", [("lfs", "xet"), ("xet", "lfs")])
def test_a_file_stored_either_way_downloads_either_way(api, hub, tmp_path, monkeypatch, stored, fetched):
    use_transfer(monkeypatch, stored)
    repo_id = new_repo(api)
    data = os.urandom(BIG)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    [entry] = [e for e in api.list_repo_tree(repo_id) if e.path == "w.bin"]
    assert (entry.xet_hash is not None) == (stored == "xet")
    use_transfer(monkeypatch, fetched)
    assert Path(hf_hub_download(repo_id, "w.bin", token=WRITE_TOKEN.secret, cache_dir=tmp_path)).read_bytes() == data


def test_the_clients_xorbs_and_shards_pass_the_servers_checks_and_rebuild_the_file(api, hub):
    """What hf_xet sent was verified (xorb hashes, verification and file hashes, the sha256 of the rebuilt file)
    and is what the CAS serves back, chunk by chunk, for any range."""
    repo_id = new_repo(api)
    data = os.urandom(3 * BIG) + bytes(BIG)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    cas_store = hub.hub.xet.cas
    f = cas_store.file_by_sha256(hashlib.sha256(data).hexdigest())
    assert f is not None and f.size == len(data)
    assert b"".join(cas_store.read(f, 0, f.size)) == data
    assert b"".join(cas_store.read(f, 12345, 600_000)) == data[12345:600_000]
    token = xet_token(hub, repo_id, "read")
    recon = cas(token, "GET", f"/v1/reconstructions/{f.file_hash}", headers={"Range": "bytes=100000-100999"})
    assert recon.status_code == 200
    doc = recon.json()
    [term] = doc["terms"][:1]
    [fetch] = [e for e in doc["fetch_info"][term["hash"]] if e["range"]["start"] <= term["range"]["start"]][:1]
    got = httpx2.get(fetch["url"], headers={"Range": f"bytes={fetch['url_range']['start']}-{fetch['url_range']['end']}"})
    assert got.status_code == 206
    skip = doc["offset_into_first_range"]
    assert xorb.unpack(got.content)[skip:skip + 1000] == data[100000:101000]


# -- refusals --------------------------------------------------------------------------------------------------
def refused(reply: httpx2.Response, status: int, text: str) -> None:
    assert reply.status_code == status, (reply.status_code, reply.text)
    assert text in reply.json()["error"], reply.json()


def test_malformed_xorbs_and_shards_are_refused_and_nothing_is_stored(api, hub):
    repo_id = new_repo(api)
    token = xet_token(hub, repo_id)
    mark = len(hub.requests)
    chunks = [os.urandom(2000), os.urandom(3000)]
    name, body = make_xorb(chunks)
    store = hub.hub.xet.cas
    refused(cas(token, "POST", f"/v1/xorbs/default/{'0' * 64}", content=body), 400, "hash mismatch")
    refused(cas(token, "POST", f"/v1/xorbs/default/{name}", content=body[:-7]), 400, "claims")
    refused(cas(token, "POST", f"/v1/xorbs/default/{name}", content=b"\x01" + body[1:]), 400, "version")
    refused(cas(token, "POST", f"/v1/xorbs/default/{name[:10]}", content=body), 400, "64 hex digits")
    refused(cas(token, "POST", f"/v1/xorbs/other/{name}", content=body), 400, "prefix")
    assert not store.has_xorb(name)

    file_hash, terms, sha = file_of(chunks, name)
    missing = make_shard([(file_hash, terms, sha)])
    refused(cas(token, "POST", "/v1/shards", content=missing), 400, "was not uploaded")
    frames = [json.loads(line) for line in cas(token, "POST", "/v2/shards", content=missing).text.splitlines()]
    assert frames[-1]["type"] == "error" and "was not uploaded" in frames[-1]["message"]
    assert cas(token, "POST", f"/v1/xorbs/default/{name}", content=body).json() == {"was_inserted": True}
    assert cas(token, "POST", f"/v1/xorbs/default/{name}", content=body).json() == {"was_inserted": False}

    wrong_check = [(n, s, e, size, bytes(32)) for n, s, e, size, _ in terms]
    refused(cas(token, "POST", "/v1/shards", content=make_shard([(file_hash, wrong_check, sha)])), 400,
            "verification hash")
    refused(cas(token, "POST", "/v1/shards", content=make_shard([(bytes(32), terms, sha)])), 400, "file hash mismatch")
    refused(cas(token, "POST", "/v1/shards", content=make_shard([(file_hash, terms, bytes(32))])), 400, "sha256")
    past_end = [(n, 0, 5, size, c) for n, _, _, size, c in terms]
    refused(cas(token, "POST", "/v1/shards", content=make_shard([(file_hash, past_end, sha)])), 400, "past the end")
    refused(cas(token, "POST", "/v1/shards", content=b"garbage"), 400, "truncated")
    refused(cas(token, "POST", "/v1/shards", content=make_shard([(file_hash, terms, sha)])[:-20]), 400, "truncated")
    assert store.file(hashes.hex_of(file_hash)) is None  # nothing half-stored

    assert cas(token, "POST", "/v1/shards", content=make_shard([(file_hash, terms, sha)])).json() == {"result": 1}
    assert store.file(hashes.hex_of(file_hash)).size == sum(map(len, chunks))
    assert not any(r.status >= 500 for r in list(hub.requests)[mark:])  # each refusal a 4xx, never a server error


def test_cas_requests_need_a_valid_xet_token_of_the_right_scope(api, hub):
    repo_id = new_repo(api)
    api.upload_file(path_or_fileobj=os.urandom(BIG), path_in_repo="w.bin", repo_id=repo_id)
    [entry] = [e for e in api.list_repo_tree(repo_id, expand=True) if e.path == "w.bin"]
    read = xet_token(hub, repo_id, "read")
    name, body = make_xorb([os.urandom(100)])
    refused(cas(read, "POST", f"/v1/xorbs/default/{name}", content=body), 403, "read scope")
    refused(cas({**read, "accessToken": "nope"}, "GET", f"/v1/reconstructions/{entry.xet_hash}"), 401, "invalid")
    refused(httpx2.get(f"{read['casUrl']}/v1/reconstructions/{entry.xet_hash}"), 401, "token is required")
    refused(cas(read, "GET", f"/v1/reconstructions/{'ab' * 32}"), 404, "no file")
    refused(cas(read, "GET", f"/v1/reconstructions/{entry.xet_hash}", headers={"Range": f"bytes={BIG}-"}), 416,
            "past the end")
    assert cas(read, "GET", f"/v1/reconstructions/{entry.xet_hash}").status_code == 200
    hub.hub.xet.auth.expire_all()
    refused(cas(read, "GET", f"/v1/reconstructions/{entry.xet_hash}"), 401, "expired")
    # the client refreshes an expired token by itself
    assert Path(hf_hub_download(repo_id, "w.bin", token=WRITE_TOKEN.secret)).stat().st_size == BIG
    # a read token for a repo the caller cannot see is the Hub's 404, and presigned URLs are checked
    private = f"alice/xet-private-{uuid.uuid4().hex[:6]}"
    api.create_repo(private, private=True)
    bob = httpx2.get(f"{hub.url}/api/models/{private}/xet-read-token/main",
                     headers={"Authorization": "Bearer hf_bob_read_secret_0123456789"})
    assert bob.status_code == 404
    fetch = httpx2.head(f"{hub.url}/{repo_id}/resolve/main/w.bin",
                        headers={"Authorization": f"Bearer {WRITE_TOKEN.secret}"}).headers["Location"]
    refused(httpx2.get(fetch.replace("X-Signature=", "X-Signature=0")), 403, "signature")
    assert httpx2.get(fetch).status_code == 200
    assert httpx2.get(f"{hub.url}/api/models/{repo_id}").status_code == 200  # still serving


def test_a_resumed_publish_uploads_again_a_shard_the_hub_no_longer_holds(tmp_path, own_hub, capsys, transfer):
    """The resume check asks the Hub which pre-uploaded shards it holds: one the Hub dropped (never committed,
    garbage-collected) is computed and uploaded again, for Xet-stored objects as for LFS ones."""
    hub, repos = own_hub(TripletSpec(arch="llama", hidden_size=128, intermediate_size=256), "5xx=1",
                         only=("POST /api/models/alice/gc/commit/",))
    r = recipe(tmp_path, repos, target="alice/gc", shard="300KB")
    code, _, err = run_main(capsys, "publish", str(r), "--fetch", "stream")
    assert code == 2, err
    journal = next((tmp_path / "home" / "chatvector").rglob("journal.jsonl"))
    records = [json.loads(line) for line in journal.read_text().splitlines() if '"shard"' in line]
    dropped = records[0]["sha256"]
    store = hub.store
    with store._tx() as db:  # the Hub's garbage collection of an uncommitted object
        db.execute("DELETE FROM blobs WHERE sha256=?", (dropped,))
    store.blob_path(dropped).unlink()
    hub.stop()
    clean = own_hub.serve()
    code, _, err = run_main(capsys, "publish", str(r), "--fetch", "stream")
    assert code == 0, err
    assert len(file_registrations(clean.requests)) == 1  # that shard alone went up again
    files = list(HfApi(endpoint=clean.url, token=WRITE_TOKEN.secret).list_repo_tree("alice/gc", expand=True))
    assert all(e.lfs is not None for e in files if e.path.endswith(".safetensors"))
    assert dropped in {e.lfs.sha256 for e in files if e.path.endswith(".safetensors")}, (dropped, records[0])


def test_publish_with_xet_is_byte_identical_to_publish_with_lfs_and_stored_with_xet(tmp_path, own_hub, capsys,
                                                                                     monkeypatch):
    """The same recipe published four ways (Xet or LFS, snapshot or stream): the same files, byte for byte; the
    weights of the Xet publishes are Xet files (a `xetHash`), those of the LFS ones are not."""
    hub, repos = own_hub(TripletSpec(arch="llama", hidden_size=128, intermediate_size=256))
    api = HfApi(endpoint=hub.url, token=WRITE_TOKEN.secret)
    published = {}
    for transfer in ("lfs", "xet"):  # (LFS first: the Hub knows content once, and Xet-stored it stays)
        use_transfer(monkeypatch, transfer)
        for fetch in ("snapshot", "stream"):
            target = f"alice/both-{transfer}-{fetch}"
            r = recipe(tmp_path, repos, target=target, shard="300KB", name=f"{transfer}-{fetch}")
            code, _, err = run_main(capsys, "publish", str(r), "--fetch", fetch)
            assert code == 0, err
            entries = [e for e in api.list_repo_tree(target, expand=True) if e.path.endswith(".safetensors")]
            assert len(entries) >= 2 and all((e.xet_hash is not None) == (transfer == "xet") for e in entries)
            published[transfer, fetch] = {e.path: e.lfs.sha256 for e in entries}
    assert len({tuple(sorted(v.items())) for v in published.values()}) == 1, published
