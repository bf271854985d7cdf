"""From merged tensors to a checked model folder: the checks before a run (`preflight`: out dir, disk, device,
token, target, tag, card), the small files (`assemble`), the verification and the spot check (`verify`,
`spotcheck`), chatvector.json (`provenance`) and, in a streaming publish, each shard's upload as it is written
(`shardupload`). The run that sequences fetch → merge → build is `chatvector.runner`.
"""
