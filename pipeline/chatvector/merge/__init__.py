"""The merge engine: exact, streaming, bounded-memory chat-vector arithmetic from local safetensors
files to (sharded) safetensors output. See jobs.py for what a job means, engine.py for how it runs."""

from chatvector.merge.engine import resolve_device, run_merge, run_merges
from chatvector.merge.jobs import MergeOutput, MergeResult, RowCopy, TensorJob, TensorSource, VectorTerm
from chatvector.merge.sharding import plan_shards

__all__ = [
    "MergeOutput",
    "MergeResult",
    "RowCopy",
    "TensorJob",
    "TensorSource",
    "VectorTerm",
    "plan_shards",
    "resolve_device",
    "run_merge",
    "run_merges",
]
