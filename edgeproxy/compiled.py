"""Which modules are compiled with mypyc, and whether the built ones are current.

The request path's pure functions and its wire path (the modules in
`MODULES`) are compiled to C extensions by mypyc (setup.py, run by
scripts/compile, which scripts/run and scripts/test call): the same source,
type-checked as mypy checks it, then run without the interpreter's
per-bytecode cost. Measured side by side on one core against the same
source run plain (docs/benchmarks.md, Run 11): a hit's and a client 304's
CPU -33%, a revalidation's -29%, a miss's -11%; the modules added in Run
12 (the disk store, collapsing, the upstream functions and pools, metrics,
the stores' shared classes) with written-out dataclass constructors
(frozen.py) another -18% and -16%.

A built extension sits next to its source and Python imports it in the
source's place, so a source edited since the build would not run: the build
writes each source's SHA-256 to `MANIFEST`, and importing edgeproxy checks
them (`check`). Without a build (no compiler, or `pip install` without
EDGEPROXY_COMPILE=1) the package runs as plain Python, the same code.

Left out, and why: modules with async generators (mypyc does not compile
them: fill.py's pumps; h1client.py's, collapse.py's and disk.py's became a
class or moved to a plain module, store/reading.py); classes built on a
plain class and combined with another (serving.Responder and
upstream_client.UpstreamClient under fill.Relay); the access log
(compiled, with three fixes it needed: a `float` parameter converted an
int status to 200.0, LineWriter.MAX_PENDING became an instance slot, and
`view = view[n:]` in a `while view:` loop wrote a batch twice; it then
measured a hit 3.5% dearer, a revalidation and a miss 1% cheaper: not
worth it). A compiled class's attributes are fixed: tests spy on the
plain objects around it, or on a plain subclass's instances (DiskStore
allows them: tests/spying.py).

Also miscompiled, and so kept out of compiled modules: a class attribute
of an exception class whose base is a plain module's (OriginDown's
`status_hint = 503` read 500: the error classes live in errors.py, and a
test compares every compiled class's constants with its plain source's);
an OSError subclass (refused: store/base.NotOpen); a call of a property's
value, `self._sql(...)` (it called the property with the arguments:
disk.py calls through a local).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "_compiled.json"

# Relative to the package directory. Not the subpackages' __init__.py (a
# docstring each): compiled in place, a package's __path__ came out wrong.
MODULES: tuple[str, ...] = (
    "policy/decide.py",
    "policy/entry.py",
    "policy/freshness.py",
    "policy/invalidation.py",
    "policy/response.py",
    "policy/settings.py",
    "policy/stale.py",
    "policy/storable.py",
    "policy/transform.py",
    "policy/validation.py",
    "http/accept_encoding.py",
    "http/cache_control.py",
    "http/cache_status.py",
    "http/conditionals.py",
    "http/dates.py",
    "http/etags.py",
    "http/fields.py",
    "http/range_slicer.py",
    "http/ranges.py",
    "http/request_head.py",
    "http/structured.py",
    "http/surrogate.py",
    "http/vary.py",
    "cachekey.py",
    "forwarding.py",
    "routing.py",
    "store/memory.py",
    "store/tiered.py",
    "store/generation.py",
    "h1client.py",
    "wire.py",
    "wire_head.py",
    "wire_miss.py",
    "wire_revalidation.py",
    "origin.py",
    "pool.py",
    "metrics.py",
    "store/pool.py",
    "store/disk.py",
    "store/common.py",
    "collapse.py",
    "upstream.py",
)


# No await in a finally. mypyc (mypy 2.4) miscompiles a coroutine's
# `finally` that awaits: once a compiled coroutine of the same module has
# handled an exception, a later `try: ... finally: await ...` whose try
# block ends normally raises that old exception again after the await
# (reproduced in a ten-line module; not across two modules, and not with a
# `finally` without await, `async with`, or except/else blocks that await).
# It is what failed a store/tiered.py test when compiled (open handles an
# error, close awaited in a finally). The compiled modules never await in a
# `finally` (tests/unit/test_compiled.py checks it): they clean up in
# `except BaseException: ...; raise` and again after the try.


class StaleBuild(ImportError):
    """A compiled module's source changed since it was built."""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(package: Path = PACKAGE, modules: tuple[str, ...] = MODULES) -> None:
    """Before a build: each module's source digest, what the build is of."""
    sums = {m: digest(package / m) for m in modules}
    (package / MANIFEST.name).write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")


def _manifest(package: Path) -> dict[str, str] | None:
    try:
        sums = json.loads((package / MANIFEST.name).read_text())
    except (OSError, ValueError):
        return None
    return sums if isinstance(sums, dict) else None


def built(package: Path = PACKAGE) -> list[Path]:
    """The extension modules in the package (any, listed or not)."""
    return sorted(package.rglob("*.so"))


def _source_of(package: Path, so: Path) -> str:
    """`policy/decide.cpython-311-x86_64-linux-gnu.so` -> `policy/decide.py`."""
    rel = so.relative_to(package)
    return str(rel.parent / (rel.name.split(".", 1)[0] + ".py"))


def stale(package: Path = PACKAGE) -> list[str]:
    """The compiled modules whose built extension is not of their current
    source: listed in the manifest with another digest, or built (a .so
    beside the source) and not in the manifest at all."""
    sums = _manifest(package) or {}
    out: list[str] = []
    for so in built(package):
        module = _source_of(package, so)
        source = package / module
        if not source.exists():
            continue  # mypyc's shared runtime library: no source of its own
        if sums.get(module) != digest(source):
            out.append(module)
    return out


def check(package: Path = PACKAGE) -> None:
    """Refuse to run a compiled module whose source has changed since."""
    changed = stale(package)
    if changed:
        raise StaleBuild(
            f"edgeproxy: {', '.join(changed)} changed since the last build; "
            "rebuild with scripts/compile (scripts/run and scripts/test do), or "
            "remove the built extensions (scripts/compile --clean) to run the plain sources"
        )


def current(package: Path = PACKAGE, modules: tuple[str, ...] = MODULES) -> bool:
    """Whether a build of exactly `modules`, from their current sources, is in place."""
    sums = _manifest(package)
    if sums is None or set(sums) != set(modules) or stale(package):
        return False
    have = {_source_of(package, so) for so in built(package)}
    return all(m in have for m in modules)


def clean(package: Path = PACKAGE) -> int:
    """Remove the built extensions and the manifest: the sources run again."""
    gone = built(package)
    for so in gone:
        so.unlink()
    (package / MANIFEST.name).unlink(missing_ok=True)
    return len(gone)


def is_compiled(module_file: str | None) -> bool:
    """Whether a module (its __file__) was loaded from a compiled extension."""
    return module_file is not None and module_file.endswith(".so")


if __name__ == "__main__":  # run by path (scripts/_venv.sh): no package import, no check
    import sys

    if sys.argv[1:] == ["--current"]:
        sys.exit(0 if current() else 1)
    if sys.argv[1:] == ["--clean"]:
        print(f"removed {clean()} compiled extension(s)")
        sys.exit(0)
    sys.exit("usage: python edgeproxy/compiled.py --current | --clean")
