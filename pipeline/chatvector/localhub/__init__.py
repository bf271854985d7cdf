"""A local server speaking the Hugging Face Hub HTTP API, as huggingface_hub 2.4.0 uses it.

It is the pipeline's offline default and the server every test talks to through the real client.
"""

from chatvector.localhub.protocol import Token, parse_token_spec
from chatvector.localhub.server import LocalHub, LoggedRequest, serve_forever

__all__ = ["LocalHub", "LoggedRequest", "Token", "parse_token_spec", "serve_forever"]
