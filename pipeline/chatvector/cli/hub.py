"""`chatvector hub serve`: the local Hub as a command (chatvector.localhub.serve.serve)."""

from __future__ import annotations

import argparse

# The libraries each command runs are imported inside its functions: start-up time (`chatvector --help` and
# `plan` load no torch, transformers or huggingface_hub; tests check it).

DESCRIPTION = """\
Serve the Hugging Face Hub HTTP API (the part huggingface_hub uses) from the folder ROOT.

Point a client at it with HF_ENDPOINT=http://HOST:PORT (set before importing
huggingface_hub); nothing else. As on the Hub, every file a `filter=lfs` rule of the repo's
.gitattributes matches (*.safetensors, *.bin, ...) or as large as --lfs-threshold is a large file: a
client with hf_xet (the default) uploads it through Xet, to the CAS this server also runs, and one with
HF_HUB_DISABLE_XET=1 through Git LFS; either way it downloads either way, and /resolve answers a large
file with a redirect to a presigned URL on the storage host (this server under its other loopback name,
127.0.0.1 <-> localhost), as the Hub does.
After its first line (`Serving on http://HOST:PORT`, which scripts parse), the server prints the lines
to paste into the client's shell: `export HF_ENDPOINT=...` and, for each token that can write, `# export HF_TOKEN=<SECRET given with --token NAME>`. The secret itself is never
printed: a server's output often ends up in a log file, so the line names the token and you fill in the
secret you chose. Without a token that can write (--token NAME=SECRET:write, or a fine-grained token
with repo.write) it warns on stderr that every upload and publish will be refused.

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

Network test knobs (all off by default) emulate a slow or flaky Hub for the clients' retries:
  --throttle MB_PER_S         each connection's bodies, both directions (MB: 10^6 bytes; 0: unlimited)
  --throttle-total MB_PER_S   all downloads together, and apart from them all uploads together
  --faults KIND=P[,KIND=P...] a fraction P of the requests a download or an upload makes (file GET/HEAD,
                              repo info, tree, preupload, commit, LFS) get, instead of their answer:
                                5xx   500, 502 or 503 (the endpoint does not run)
                                429   429 with Retry-After: 1 (the endpoint does not run)
                                drop  the connection fails mid-body: a GET's answer is cut halfway; a
                                      HEAD, POST or PUT gets no answer (half its body read) and its
                                      endpoint does not run (no write is ever half done)
  --faults-seed N             seed of the faults' random draws (default 0): same seed and requests,
                              same faults
  --faults-only '[METHOD ]PATH-SUBSTRING'
                              faults only for the requests matching one of these (repeatable)
  Each injected fault is logged (stderr and ROOT/access.log) with fault=500|502|503|429|drop.

Examples:
  chatvector hub serve --root ./hub --port 8765 --token alice=hf_secret:write \\
      --token bob=hf_other:write --org my-org=alice:admin,bob:contributor
  chatvector hub serve --root ./hub --token alice=hf_secret:write --throttle 20 --throttle-total 50 \\
      --faults 5xx=0.05,429=0.02,drop=0.02 --faults-seed 1 --faults-only 'GET /resolve/'
"""


def add(sub: argparse._SubParsersAction) -> None:
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
        help="files of at least this size are uploaded through Git LFS, as are files the repo's .gitattributes "
             "marks filter=lfs (default 10 MiB)",
    )
    net = serve.add_argument_group("network test knobs (see above)")
    net.add_argument("--throttle", metavar="MB_PER_S",
                     help="pace each connection's bodies to MB_PER_S megabytes per second, both directions")
    net.add_argument("--throttle-total", metavar="MB_PER_S",
                     help="pace all downloads together, and all uploads together, to MB_PER_S each")
    net.add_argument("--faults", metavar="SPEC",
                     help="inject faults into downloads and uploads, e.g. 5xx=0.05,429=0.02,drop=0.02")
    net.add_argument("--faults-seed", metavar="N", help="seed of the fault draws (default 0)")
    net.add_argument("--faults-only", action="append", default=[], metavar="'[METHOD ]PATH-SUBSTRING'",
                     help="inject faults only into requests matching this, e.g. 'GET /resolve/' (repeatable)")
    serve.set_defaults(func=_cmd_hub_serve)
    # `hub serve -v/-q` as every command takes them (its `--token` is the server's own: NAME=SECRET:SCOPE)
    serve.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="log debug messages and show tracebacks")
    serve.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no line per request on stderr (ROOT/access.log still has them); warnings and errors only")


def _cmd_hub_serve(args: argparse.Namespace) -> int:
    from chatvector.localhub.serve import serve

    return serve(args.root, host=args.host, port=args.port, token_specs=args.token,
                 fine_grained_specs=args.fine_grained_token, org_specs=args.org, lfs_threshold=args.lfs_threshold,
                 throttle=args.throttle, throttle_total=args.throttle_total, faults=args.faults,
                 faults_seed=args.faults_seed, faults_only=args.faults_only,
                 echo=not getattr(args, "quiet", False))  # -q: the access log only
