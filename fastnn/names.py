"""Name lookup shared by the activation, loss, optimizer, initializer and dataset tables."""

import difflib


def normalize(name):
    """Lower-case, trim, and treat '-' and ' ' like '_' so 'Leaky-ReLU' finds 'leaky_relu'."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def lookup(kind, name, table):
    """Return ``table[name]`` or raise a ValueError that lists the valid names."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be given by name (a string); got {type(name).__name__}")
    key = normalize(name)
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown {kind} {name!r}; valid names: {', '.join(sorted(table))}.{hint}"
    )
