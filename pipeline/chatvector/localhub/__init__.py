"""A local server speaking the Hugging Face Hub HTTP API, as huggingface_hub 2.4.0 uses it.

It is the pipeline's offline default and the server every test talks to through the real client.

Modules, each importing only those above it: `protocol` (HTTP plumbing, tokens, organizations) and
`storage` (blobs and SQLite), `hub` (shared state and the access rules), the endpoints (`api`, `files`,
`lfs`, `commit`, `discussions`), `routes` (the route table), `server` (the HTTP server, `LocalHub`), `serve`
(`chatvector hub serve`: its settings checked, the server started, its usage printed; the parser is chatvector.cli.hub).
"""

from chatvector.localhub.protocol import FineGrained, Org, Scoped, Token, parse_org_spec, parse_token_spec

__all__ = ["FineGrained", "LocalHub", "LoggedRequest", "Org", "Scoped", "Token", "parse_org_spec", "parse_token_spec"]


def __getattr__(name: str):
    """The server loads on first use: `chatvector --help` and the other commands do not pay for it."""
    if name in ("LocalHub", "LoggedRequest"):
        from chatvector.localhub import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
