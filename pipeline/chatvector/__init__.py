"""chatvector: make, verify and publish chat-vector merges on the Hugging Face Hub."""

__version__ = "0.1.0"
