"""`chatvector hub serve`: the local Hub as a command."""

from __future__ import annotations

import argparse

from chatvector.errors import PipelineError


def add_hub_command(sub: argparse._SubParsersAction) -> None:
    """`chatvector hub serve`."""
    hub = sub.add_parser("hub", help="the local Hub-compatible server")
    hub_sub = hub.add_subparsers(dest="hub_command", required=True, metavar="{serve}")
    serve = hub_sub.add_parser(
        "serve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="serve a Hub-compatible API from a folder",
        description="Serve the Hugging Face Hub HTTP API (the part huggingface_hub uses) from the folder ROOT.\n\n"
        "Point a client at it with HF_ENDPOINT=http://HOST:PORT (set before importing\n"
        "huggingface_hub) and HF_HUB_DISABLE_XET=1 when files above the LFS threshold are uploaded.\n\n"
        "Example:\n  chatvector hub serve --root ./hub --port 8765 --token alice=hf_secret:write",
    )
    serve.add_argument("--root", required=True, help="folder holding blobs and the SQLite metadata")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    serve.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="NAME=SECRET:read|write",
        help="accept SECRET as user NAME's token with read or write scope (repeatable)",
    )
    serve.add_argument(
        "--lfs-threshold",
        type=int,
        default=10 * 1024 * 1024,
        metavar="BYTES",
        help="files of at least this size are uploaded through Git LFS (default 10 MiB)",
    )
    serve.set_defaults(func=_cmd_hub_serve)


def _cmd_hub_serve(args: argparse.Namespace) -> int:
    from chatvector.localhub.server import parse_token_spec, serve_forever

    try:
        tokens = [parse_token_spec(spec) for spec in args.token]
    except ValueError as err:
        raise PipelineError(str(err)) from None
    if not 0 <= args.port <= 65535:
        raise PipelineError(f"--port {args.port}: must be between 0 and 65535")
    if args.lfs_threshold < 0:
        raise PipelineError(f"--lfs-threshold {args.lfs_threshold}: must be 0 or more bytes")
    try:
        serve_forever(args.root, host=args.host, port=args.port, tokens=tokens, lfs_threshold=args.lfs_threshold)
    except OSError as err:  # port in use, unknown host, --root not a folder
        raise PipelineError(f"cannot serve {args.root} on {args.host}:{args.port}: {err.strerror or err}") from None
    return 0
