"""The project's error hierarchy.

Library code raises these; only the CLI turns them into one line on stderr and exit code 2.
Messages name the file or field at fault and never contain a token.
"""


class PipelineError(Exception):
    """Base class: a problem the user can fix (bad input, unreachable repo, failed check)."""

    exit_code = 2


class RecipeError(PipelineError):
    """The recipe file is malformed or names something that does not exist."""


class CompatibilityError(PipelineError):
    """The base, chat and cp checkpoints cannot be merged as the recipe asks."""


class HubError(PipelineError):
    """A Hub repository, revision or file could not be reached."""


class MergeError(PipelineError):
    """The merge itself failed (I/O, device, arithmetic)."""


class VerificationError(PipelineError):
    """The merged model failed a check that must pass before anything is published."""
