"""Serving the local Hub from the command line's settings (`chatvector hub serve`, whose parser is
chatvector.cli.hub): the specs checked, the server started, the lines a client pastes printed, then served until
stopped.

    serve(root, host=..., port=..., token_specs=[...], org_specs=[...], ...)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from chatvector.errors import PipelineError


def serve(root: str, *, host: str = "127.0.0.1", port: int = 0, token_specs: Sequence[str] = (),
          fine_grained_specs: Sequence[str] = (), org_specs: Sequence[str] = (), lfs_threshold: int = 10 * 1024 * 1024,
          throttle: str | None = None, throttle_total: str | None = None, faults: str | None = None,
          faults_seed: str | None = None, faults_only: Sequence[str] = (), echo: bool = True) -> int:
    """Serve ROOT until stopped (each option as `chatvector hub serve` takes it, a bad one a PipelineError naming
    it); `echo` False (-q): requests go to ROOT/access.log only."""
    # Imported here, not at the top, so every other command's start does not pay for http.server (~0.2 s).
    from chatvector.localhub.protocol import parse_fine_grained_token_spec, parse_org_spec, parse_token_spec
    from chatvector.localhub.server import LocalHub

    try:
        tokens = [parse_token_spec(spec) for spec in token_specs]
        tokens += [parse_fine_grained_token_spec(spec) for spec in fine_grained_specs]
        orgs = [parse_org_spec(spec) for spec in org_specs]
    except ValueError as err:
        raise PipelineError(str(err)) from None
    _check_names(tokens, orgs)
    if not 0 <= port <= 65535:
        raise PipelineError(f"--port {port}: must be between 0 and 65535")
    if lfs_threshold < 0:
        raise PipelineError(f"--lfs-threshold {lfs_threshold}: must be 0 or more bytes")
    net = _network_knobs(throttle, throttle_total, faults, faults_seed, faults_only)
    try:
        hub = LocalHub(root, host=host, port=port, tokens=tokens, orgs=orgs,
                       lfs_threshold=lfs_threshold, log_file=Path(root) / "access.log",
                       echo=echo, **net)  # -q: the access log only
    except OSError as err:  # port in use, unknown host, --root not a folder
        raise PipelineError(f"cannot serve {root} on {host}:{port}: {err.strerror or err}") from None
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


def _network_knobs(throttle: str | None, throttle_total: str | None, faults: str | None, faults_seed: str | None,
                   faults_only: Sequence[str]) -> dict:
    """--throttle, --throttle-total, --faults, --faults-seed, --faults-only → LocalHub's keyword arguments."""
    from chatvector.localhub.faults import FAULTS_EXAMPLE, parse_faults, parse_only
    from chatvector.localhub.throttle import parse_rate

    try:
        rate = parse_rate(throttle, "--throttle") if throttle is not None else None
        total = parse_rate(throttle_total, "--throttle-total") if throttle_total is not None else None
        if faults is not None:
            parse_faults(faults, "--faults")
        for entry in faults_only:
            parse_only(entry, "--faults-only")
    except ValueError as err:
        raise PipelineError(str(err)) from None
    seed = 0
    if faults_seed is not None:
        try:
            seed = int(faults_seed)
        except ValueError:
            raise PipelineError(f"--faults-seed {faults_seed}: must be an integer, e.g. 0") from None
    if faults is None and (faults_seed is not None or faults_only):
        flag = "--faults-seed" if faults_seed is not None else "--faults-only"
        raise PipelineError(f"{flag} needs --faults, e.g. --faults {FAULTS_EXAMPLE}")
    return {"throttle": rate, "throttle_total": total, "faults": faults, "faults_seed": seed,
            "faults_only": list(faults_only)}


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
