"""Frozen dataclasses on the hot path write their __init__ out.

A compiled build (edgeproxy/compiled.py) still runs a dataclass's generated
__init__ as plain Python, and a frozen one's sets each call
object.__setattr__: ~1-3.5 us a construction, and a miss or a revalidation
makes a dozen. The hot classes write theirs out: compiled (`_NATIVE` in
their module: it was loaded from an extension), `self.x = x` is a native
store, ~0.1 us for them all, and the class stays frozen to Python code;
plain, those stores would meet the frozen __setattr__, so `set_fields`
makes the same ones the generated __init__ would.
"""

from __future__ import annotations


def set_fields(obj: object, names: tuple[str, ...], values: tuple[object, ...]) -> None:
    """Each field's value, in order, on a frozen instance (its plain __init__)."""
    for name, value in zip(names, values, strict=True):
        object.__setattr__(obj, name, value)
