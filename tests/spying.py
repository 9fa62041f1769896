"""A disk store whose methods a test may replace on the instance.

DiskStore is compiled (edgeproxy/compiled.py), and a compiled class's
instances have fixed attributes: `monkeypatch.setattr(disk, "lookup", spy)`
fails on them. An instance of this plain subclass takes the patch, and the
compiled code calling it (the hot tier, the store's own methods) calls the
patched method: DiskStore allows interpreted subclasses for this. Plain
sources (no build): an ordinary subclass, the same behaviour.
"""

from __future__ import annotations

from edgeproxy.store.disk import DiskStore


class SpiedDiskStore(DiskStore):
    """DiskStore as it is; opened with `SpiedDiskStore.open(...)`."""
