"""Build hook: everything but the compiled modules comes from pyproject.toml.

With EDGEPROXY_COMPILE=1 (scripts/compile sets it), the modules listed in
edgeproxy/compiled.py are compiled to C extensions with mypyc; otherwise
(a plain `pip install`) the package is pure Python. See edgeproxy/compiled.py.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

ext_modules = []
if os.environ.get("EDGEPROXY_COMPILE") == "1":
    from mypyc.build import mypycify

    here = Path(__file__).resolve().parent
    compiled = runpy.run_path(str(here / "edgeproxy" / "compiled.py"))
    listed = compiled["MODULES"]
    compiled["write_manifest"]()  # what is being built: checked at import
    # One shared library for them all, inside the package (a dotted group
    # name), so an installed or in-place build needs nothing outside it.
    ext_modules = mypycify(
        [f"edgeproxy/{m}" for m in listed], group_name="edgeproxy.native", opt_level="3"
    )

setup(ext_modules=ext_modules)
