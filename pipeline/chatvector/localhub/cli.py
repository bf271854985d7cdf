"""`chatvector hub serve`: the local Hub as a command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatvector.errors import PipelineError

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
    net = _network_knobs(args)
    try:
        hub = LocalHub(args.root, host=args.host, port=args.port, tokens=tokens, orgs=orgs,
                       lfs_threshold=args.lfs_threshold, log_file=Path(args.root) / "access.log",
                       echo=not getattr(args, "quiet", False), **net)  # -q: the access log only
    except OSError as err:  # port in use, unknown host, --root not a folder
        raise PipelineError(f"cannot serve {args.root} on {args.host}:{args.port}: {err.strerror or err}") from None
    knobs = _describe_knobs(net)
    print(f"Serving on {hub.url}{' (' + knobs + ')' if knobs else ''}", flush=True)  # first line: scripts parse it
    print("\n".join(usage_lines(hub.url, tokens)), flush=True)
    if not any(_can_write(t) for t in tokens):
        print("warning: no write token (--token NAME=SECRET:write or a fine-grained token with repo.write): the "
              "server accepts reads only; uploads and publishes will be refused", file=sys.stderr, flush=True)
    hub.serve_forever()  # logs each request (never a token) to stderr and ROOT/access.log
    return 0


def usage_lines(url: str, tokens: list) -> list[str]:
    """The lines to paste into a client's shell to use the server at URL.

    Decision: a token's secret is never printed, not even to the terminal. The server's stdout is often
    redirected to a file (`... > hub.log &`, a service manager), and the only thing a printed secret would save
    is retyping what the user typed a moment ago; so the HF_TOKEN line names the token, not its secret."""
    lines = ["# to use this server, paste into the client's shell (before huggingface_hub is imported):",
             f"export HF_ENDPOINT={url}"]
    for t in tokens:
        if _can_write(t):
            flag = "--fine-grained-token" if t.fine_grained is not None else "--token"
            lines.append(f"# export HF_TOKEN=<SECRET given with {flag} {t.name}>")
    return lines


def _can_write(token) -> bool:
    """Whether the token can write anywhere: scope write, or a fine-grained token granting repo.write somewhere."""
    from chatvector.localhub.protocol import REPO_WRITE

    if token.fine_grained is not None:
        return any(REPO_WRITE in s.permissions for s in token.fine_grained.scoped)
    return token.scope == "write"


def _network_knobs(args: argparse.Namespace) -> dict:
    """--throttle, --throttle-total, --faults, --faults-seed, --faults-only → LocalHub's keyword arguments."""
    from chatvector.localhub.faults import FAULTS_EXAMPLE, parse_faults, parse_only
    from chatvector.localhub.throttle import parse_rate

    try:
        throttle = parse_rate(args.throttle, "--throttle") if args.throttle is not None else None
        total = parse_rate(args.throttle_total, "--throttle-total") if args.throttle_total is not None else None
        if args.faults is not None:
            parse_faults(args.faults, "--faults")
        for entry in args.faults_only:
            parse_only(entry, "--faults-only")
    except ValueError as err:
        raise PipelineError(str(err)) from None
    seed = 0
    if args.faults_seed is not None:
        try:
            seed = int(args.faults_seed)
        except ValueError:
            raise PipelineError(f"--faults-seed {args.faults_seed}: must be an integer, e.g. 0") from None
    if args.faults is None and (args.faults_seed is not None or args.faults_only):
        flag = "--faults-seed" if args.faults_seed is not None else "--faults-only"
        raise PipelineError(f"{flag} needs --faults, e.g. --faults {FAULTS_EXAMPLE}")
    return {"throttle": throttle, "throttle_total": total, "faults": args.faults, "faults_seed": seed,
            "faults_only": list(args.faults_only)}


def _describe_knobs(net: dict) -> str:
    """The network knobs that are on, for the startup line ("" when none is)."""
    parts = []
    if net["throttle"]:
        parts.append(f"throttle {net['throttle']:g} MB/s a connection")
    if net["throttle_total"]:
        parts.append(f"throttle-total {net['throttle_total']:g} MB/s")
    if net["faults"]:
        only = f" only {', '.join(repr(e) for e in net['faults_only'])}" if net["faults_only"] else ""
        parts.append(f"faults {net['faults']} seed {net['faults_seed']}{only}")
    return "; ".join(parts)


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
