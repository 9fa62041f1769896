"""The mypyc build of the hot path (edgeproxy/compiled.py): what runs is what
was built from the sources as they are, and the plain sources still work.

scripts/test compiles first and sets EDGEPROXY_EXPECT_COMPILED=1: the suite
then runs against the extensions, and this says so.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy import compiled
from edgeproxy.policy.entry import Entry
from tests.contract.helpers import make_entry

SO = ".cpython-311-x86_64-linux-gnu.so"


@pytest.mark.skipif(
    os.environ.get("EDGEPROXY_EXPECT_COMPILED") != "1",
    reason="not run by scripts/test, which compiles first (scripts/compile)",
)
@pytest.mark.parametrize("module", compiled.MODULES)
def test_every_listed_module_runs_compiled(module: str) -> None:
    name = "edgeproxy." + module.removesuffix(".py").replace("/", ".")
    loaded = importlib.import_module(name)
    assert compiled.is_compiled(loaded.__file__), loaded.__file__
    assert compiled.current()


def package(tmp_path: Path, sources: dict[str, str]) -> Path:
    pkg = tmp_path / "pkg"
    for rel, text in sources.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def build(pkg: Path, modules: tuple[str, ...]) -> None:
    """What setup.py does: the manifest, then an extension beside each source."""
    compiled.write_manifest(pkg, modules)
    for m in modules:
        (pkg / (m.removesuffix(".py") + SO)).write_bytes(b"\x7fELF")


MODS = ("a.py", "sub/b.py")


@pytest.mark.parametrize(
    ("change", "stale", "current"),
    [
        pytest.param(None, [], True, id="built from these sources"),
        pytest.param(("a.py", "x = 2\n"), ["a.py"], False, id="a source edited since"),
        pytest.param(("sub/b.py", "y = 1 \n"), ["sub/b.py"], False, id="whitespace counts"),
        pytest.param(("manifest", None), ["a.py", "sub/b.py"], False, id="no manifest"),
        pytest.param(("manifest", "{not json"), ["a.py", "sub/b.py"], False, id="bad manifest"),
        pytest.param(("extra.so", None), [], False, id="a module built but not listed"),
        pytest.param(("lost", "a.py"), [], False, id="a listed module not built"),
    ],
)
def test_stale_and_current(
    tmp_path: Path, change: tuple[str, str | None] | None, stale: list[str], current: bool
) -> None:
    pkg = package(tmp_path, {"a.py": "x = 1\n", "sub/b.py": "y = 1\n", "c.py": "z = 1\n"})
    build(pkg, MODS)
    (pkg / ("native__mypyc" + SO)).write_bytes(b"")  # the shared runtime: no source
    if change is not None:
        what, value = change
        if what == "manifest":
            manifest = pkg / compiled.MANIFEST.name
            manifest.unlink() if value is None else manifest.write_text(value)
        elif what == "extra.so":
            (pkg / ("c" + SO)).write_bytes(b"")
            compiled.write_manifest(pkg, (*MODS, "c.py"))
        elif what == "lost":
            assert value is not None
            (pkg / (value.removesuffix(".py") + SO)).unlink()
        else:
            assert value is not None
            (pkg / what).write_text(value)
    assert compiled.stale(pkg) == stale
    assert compiled.current(pkg, MODS) is current
    if change is not None and change[0] == "extra.so":
        assert compiled.current(pkg, (*MODS, "c.py"))  # listed as built: current again
    if stale:
        with pytest.raises(compiled.StaleBuild, match="scripts/compile"):
            compiled.check(pkg)
    else:
        compiled.check(pkg)


def test_clean_removes_the_build_and_the_sources_remain(tmp_path: Path) -> None:
    pkg = package(tmp_path, {"a.py": "x = 1\n", "sub/b.py": "y = 1\n"})
    build(pkg, MODS)
    assert compiled.clean(pkg) == 2
    assert compiled.built(pkg) == [] and not (pkg / compiled.MANIFEST.name).exists()
    assert (pkg / "a.py").exists() and compiled.stale(pkg) == []


def test_the_listed_modules_exist() -> None:
    assert all((compiled.PACKAGE / m).is_file() for m in compiled.MODULES)
    assert len(set(compiled.MODULES)) == len(compiled.MODULES)


# -- the plain source of what compiling changes: policy/entry.py's with_changes --


def plain(module: str) -> ModuleType:
    """A module from its .py source, whether or not an extension shadows it."""
    path = compiled.PACKAGE / (module.replace(".", "/") + ".py")
    spec = importlib.util.spec_from_file_location(f"plain_{module.replace('.', '_')}", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded  # dataclasses looks its module up
    try:
        spec.loader.exec_module(loaded)
    finally:
        del sys.modules[spec.name]
    return loaded


def test_plain_entry_is_not_native() -> None:
    assert plain("policy.entry")._NATIVE is False


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "response_time": st.floats(0, 2e9),
            "variant": st.text(max_size=5),
            "body_size": st.integers(0, 10**9),
            "soft_purged": st.booleans(),
            "tags": st.lists(st.text(max_size=3), max_size=2).map(tuple),
        },
    )
)
def test_with_changes_is_replace_plain_and_as_built(changes: dict[str, object]) -> None:
    entry_mod = plain("policy.entry")
    built = make_entry("http://a/")
    init = [f.name for f in dataclasses.fields(Entry) if f.init]
    mine = entry_mod.Entry(**{name: getattr(built, name) for name in init})
    _ = (mine.cache_control, mine.date, built.cache_control, built.field_lines)
    for e, cls in ((mine, entry_mod.Entry), (built, Entry)):
        new = e.with_changes(**changes)
        assert type(new) is cls
        for f in dataclasses.fields(cls):
            if f.init:
                assert getattr(new, f.name) == changes.get(f.name, getattr(e, f.name))
            else:
                assert getattr(new, f.name) is None  # the memos start unset


def test_entry_init_sets_each_field_plain_and_as_built() -> None:
    # Entry.__init__ is written out (native stores compiled, object.__setattr__
    # plain): every field, positional or by name, lands where the dataclass's
    # own __init__ would put it, and the memos start unset.
    entry_mod = plain("policy.entry")
    init = [f for f in dataclasses.fields(Entry) if f.init]
    values = [
        f"v{i}" if f.type == "str" else getattr(make_entry("http://a/"), f.name)
        for i, f in enumerate(init)
    ]
    for cls in (entry_mod.Entry, Entry):
        for e in (cls(*values), cls(**{f.name: v for f, v in zip(init, values, strict=True)})):
            assert [getattr(e, f.name) for f in init] == values
            assert all(getattr(e, f.name) is None for f in dataclasses.fields(cls) if not f.init)
            with pytest.raises(dataclasses.FrozenInstanceError):
                e.key = "x"  # type: ignore[misc]


def written_out_inits() -> list[tuple[str, str]]:
    """(module, class) of the compiled modules' dataclasses that write their
    own __init__ (edgeproxy/frozen.py)."""
    import ast

    out = []
    for module in compiled.MODULES:
        tree = ast.parse((compiled.PACKAGE / module).read_text())
        for node in tree.body:
            if (
                isinstance(node, ast.ClassDef)
                and any("dataclass" in ast.unparse(d) for d in node.decorator_list)
                and any(isinstance(b, ast.FunctionDef) and b.name == "__init__" for b in node.body)
            ):
                out.append((module.removesuffix(".py").replace("/", "."), node.name))
    return out


def test_written_out_inits_are_found() -> None:
    found = written_out_inits()
    assert ("policy.entry", "Entry") in found and ("http.cache_status", "CacheStatus") in found


@pytest.mark.parametrize(("module", "name"), written_out_inits())
def test_a_written_out_init_sets_every_field_as_the_dataclass_would(module: str, name: str) -> None:
    # Plain (the branch a compiled build skips): each init field gets its own
    # argument, by position and by name, the rest their defaults, and a
    # frozen class stays frozen. Sentinels: the plain source checks no types.
    cls = getattr(plain(module), name)
    init = [f for f in dataclasses.fields(cls) if f.init]
    sentinels = [object() for _ in init]
    params = cls.__dataclass_params__
    for obj in (cls(*sentinels), cls(**{f.name: v for f, v in zip(init, sentinels, strict=True)})):
        assert [getattr(obj, f.name) for f in init] == sentinels
        for f in dataclasses.fields(cls):
            if not f.init:
                expected = f.default_factory() if callable(f.default_factory) else f.default
                assert getattr(obj, f.name) == expected
        if params.frozen:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(obj, init[0].name if init else "x", None)


# -- no await in a finally (edgeproxy/compiled.py: mypyc re-raises a stale error) --


def awaits_in_finally(source: str) -> list[int]:
    """Lines of awaits (await, async for, async with) inside a `finally`."""
    import ast

    out: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Try | ast.TryStar):
            for stmt in node.finalbody:
                out += [
                    n.lineno
                    for n in ast.walk(stmt)
                    if isinstance(n, ast.Await | ast.AsyncFor | ast.AsyncWith)
                ]
    return sorted(out)


@pytest.mark.parametrize("module", compiled.MODULES)
def test_no_compiled_module_awaits_in_a_finally(module: str) -> None:
    assert awaits_in_finally((compiled.PACKAGE / module).read_text()) == []


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("async def f():\n    try:\n        pass\n    finally:\n        await g()\n", [5]),
        ("async def f():\n    try:\n        await g()\n    finally:\n        h()\n", []),
        ("async def f():\n    try:\n        pass\n    except E:\n        await g()\n", []),
        (
            "async def f():\n    try:\n        pass\n    finally:\n"
            "        async with x:\n            pass\n",
            [5],
        ),
        ("async def f():\n    try:\n        pass\n    finally:\n        def h(): pass\n", []),
    ],
)
def test_awaits_in_finally_finds_them(source: str, lines: list[int]) -> None:
    assert awaits_in_finally(source) == lines


# -- class attributes survive compiling --------------------------------------------

_SIMPLE = (int, float, str, bytes, bool, tuple, frozenset, enum.Enum, type(None))


def _class_constants(cls: type) -> dict[str, object]:
    """A class's own simple class-level values (not methods, fields' slots)."""
    return {
        name: value
        for name, value in vars(cls).items()
        if not name.startswith("__") and isinstance(value, _SIMPLE)
    }


@pytest.mark.parametrize("module", compiled.MODULES)
def test_compiled_classes_keep_their_class_attributes(module: str) -> None:
    # mypyc (mypy 2.4) dropped `status_hint = 503` from an exception class
    # deriving from a plain module's: the error was answered 500, not 503.
    # Each class constant, as the plain source defines it, is what the
    # compiled class has (inherited or its own). A native class makes one
    # an instance attribute's default (a descriptor on the class): not
    # this bug, and each instance has it.
    dotted = module.removesuffix(".py").replace("/", ".")
    built = importlib.import_module("edgeproxy." + dotted)
    source = plain(dotted)
    checked = 0
    for name, cls in vars(source).items():
        if not isinstance(cls, type) or cls.__module__ != source.__name__:
            continue
        for attr, value in _class_constants(cls).items():
            got = getattr(getattr(built, name), attr)
            if inspect.isdatadescriptor(got):
                continue
            if isinstance(value, enum.Enum):  # the plain module's own enum class
                assert (type(got).__name__, got.name) == (type(value).__name__, value.name)
            else:
                assert got == value, f"{name}.{attr}"
            checked += 1
    assert checked >= 0  # modules without such classes pass trivially
