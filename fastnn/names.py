"""Name lookup shared by the activation, loss, optimizer, initializer and dataset tables."""

import difflib


def normalize(name):
    """Lower-case, trim, and treat '-' and ' ' like '_' so 'Leaky-ReLU' finds 'leaky_relu'."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def builtin(obj, table):
    """``obj``'s name if ``obj`` is exactly the class ``table`` holds under that name (a
    built-in used as is), else None: a user's subclass, even one that keeps a built-in's
    name, is not the built-in, so no backend may replace its code with a kernel."""
    name = getattr(obj, "name", None)
    return name if type(obj) is table.get(name) else None


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
