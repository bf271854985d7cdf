"""Xet storage for the local Hub: the CAS service a stock huggingface_hub + hf_xet client uploads to and downloads
from (huggingface/xet-core's protocol specification).

* `hashes`  chunk, xorb, file and term-verification hashes (blake3 keyed), and the CAS hex form of a hash
* `xorb`    a serialized xorb: its chunks parsed, decompressed (LZ4 frame, byte-grouped LZ4) and hashed
* `shard`   a shard upload: file reconstructions, verification entries, sha256s and the xorbs it lists
* `cas`     what the CAS holds on disk: xorbs, their chunk index, and each file's reconstruction
* `routes`  the HTTP endpoints: Xet tokens, xorb upload (direct and by upload grant), shard upload (v1 and the
            v2 progress stream), reconstruction (v1, v2) and ranged xorb fetches by presigned URL
"""
