"""Make the tensorrt-stubs package (10.13) parseable by mypy.

Its generated .pyi has two syntax errors: parameters named ``in`` (a keyword) and
parameters without a default after ones with a default.  We copy the stubs and fix
both mechanically; the types themselves are untouched.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path


def _split_params(params: str):
    out, depth, cur = [], 0, ""
    for ch in params:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def _fix_def(line: str) -> str:
    m = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if not m:
        return line
    params = []
    seen_default = False
    for p in _split_params(m.group(2)):
        p = re.sub(r"^(\s*)in:", r"\1in_:", p)
        if "=" in p:
            seen_default = True
        elif seen_default and not p.strip().startswith("*"):
            p = p + " = ..."
        params.append(p)
    return m.group(1) + ",".join(params) + m.group(3)


def sanitized_stubs(dest: Path) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("tensorrt-stubs is not installed")
    site = Path(list(spec.submodule_search_locations)[0]).parent
    for pkg in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for pyi in dest.rglob("*.pyi"):
        pyi.write_text("\n".join(_fix_def(line) for line in pyi.read_text().splitlines()) + "\n")
    return dest


if __name__ == "__main__":  # .ci/run: python tests/trt_stub_sanitize.py DEST, then MYPYPATH=DEST mypy
    import sys

    print(sanitized_stubs(Path(sys.argv[1])))
