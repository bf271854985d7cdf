"""Sizes for people to read."""


def human_bytes(n: int) -> str:
    """Decimal units, as the Hub shows sizes: 404.9 kB, 16.1 GB."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
