"""`chatvector hub serve`: the local Hub as a command."""

from __future__ import annotations

import argparse
from pathlib import Path

from chatvector.errors import PipelineError

DESCRIPTION = """\
Serve the Hugging Face Hub HTTP API (the part huggingface_hub uses) from the folder ROOT.

Point a client at it with HF_ENDPOINT=http://HOST:PORT (set before importing
huggingface_hub) and HF_HUB_DISABLE_XET=1 when files above the LFS threshold are uploaded.

Namespaces are enforced as on the Hub: a write token writes to its user's namespace and to the
organizations where the user is admin or write (contributor: new repos, and the ones it created);
private repos are visible to the namespace's user and the organization's members only.

Fine-grained tokens (--fine-grained-token NAME=SECRET:SCOPE[,SCOPE...]) grant only what they list:
  TYPE:ENTITY=PERM[+PERM...]   PERM on a namespace (TYPE user or org) or one repo (TYPE model,
                               dataset, space or kernel; ENTITY the repo id); the server checks
                               repo.write (writes) and repo.content.read (private and gated reads)
  global=PERM[+PERM...]        permissions not tied to a repo (reported by whoami, not repo rights)
  gated                        canReadGatedRepos
  e.g. --fine-grained-token erin=hf_erin:org:my-org=repo.write,model:alice/x=repo.content.read
  (SECRET may not contain ':')

Example:
  chatvector hub serve --root ./hub --port 8765 --token alice=hf_secret:write \\
      --token bob=hf_other:write --org my-org=alice:admin,bob:contributor
"""


def add_hub_command(sub: argparse._SubParsersAction) -> None:
    """`chatvector hub serve`."""
    hub = sub.add_parser("hub", help="the local Hub-compatible server")
    hub_sub = hub.add_subparsers(dest="hub_command", required=True, metavar="{serve}")
    serve = hub_sub.add_parser(
        "serve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="serve a Hub-compatible API from a folder",
        description=DESCRIPTION,
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
        "--fine-grained-token",
        action="append",
        default=[],
        metavar="NAME=SECRET:SCOPE[,SCOPE...]",
        help="accept SECRET as user NAME's fine-grained token with the listed permissions (repeatable; "
        "the SCOPE syntax is above)",
    )
    serve.add_argument(
        "--org",
        action="append",
        default=[],
        metavar="NAME=USER:ROLE[,USER:ROLE...]",
        help="an organization and its members, ROLE one of admin, write, contributor, read (repeatable)",
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
    # Imported here, not at the top, so every other command's start does not pay for http.server (~0.2 s).
    from chatvector.localhub.protocol import parse_fine_grained_token_spec, parse_org_spec, parse_token_spec
    from chatvector.localhub.server import LocalHub

    try:
        tokens = [parse_token_spec(spec) for spec in args.token]
        tokens += [parse_fine_grained_token_spec(spec) for spec in args.fine_grained_token]
        orgs = [parse_org_spec(spec) for spec in args.org]
    except ValueError as err:
        raise PipelineError(str(err)) from None
    _check_names(tokens, orgs)
    if not 0 <= args.port <= 65535:
        raise PipelineError(f"--port {args.port}: must be between 0 and 65535")
    if args.lfs_threshold < 0:
        raise PipelineError(f"--lfs-threshold {args.lfs_threshold}: must be 0 or more bytes")
    try:
        hub = LocalHub(args.root, host=args.host, port=args.port, tokens=tokens, orgs=orgs,
                       lfs_threshold=args.lfs_threshold, log_file=Path(args.root) / "access.log", echo=True)
    except OSError as err:  # port in use, unknown host, --root not a folder
        raise PipelineError(f"cannot serve {args.root} on {args.host}:{args.port}: {err.strerror or err}") from None
    print(f"Serving on {hub.url}", flush=True)
    hub.serve_forever()  # logs each request (never a token) to stderr and ROOT/access.log
    return 0


def _check_names(tokens: list, orgs: list) -> None:
    """Two tokens may share a user; a secret must be unique, and an organization cannot be a user."""
    secrets_seen: dict[str, str] = {}
    for t in tokens:
        if t.secret in secrets_seen:
            raise PipelineError(f"--token/--fine-grained-token: {t.name} and {secrets_seen[t.secret]} have the same "
                                "secret; give each token its own")
        secrets_seen[t.secret] = t.name
    users = {t.name for t in tokens}
    seen: set[str] = set()
    for org in orgs:
        if org.name in seen:
            raise PipelineError(f"--org {org.name} is given twice: list all its members in one --org")
        if org.name in users:
            raise PipelineError(f"--org {org.name}: {org.name} is also a --token user; an organization needs a "
                                "name of its own")
        seen.add(org.name)
