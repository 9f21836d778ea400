"""Rules on the code itself: emotion_core stays free of the UI stack.

The pages are thin and every piece of logic lives in `emotion_core`, which the command-line tools
and the GPU recipe import without Streamlit, streamlit-webrtc or PyAV (the lent GPU machine has
none of them). So no module of the package may import them, at module level or inside a
function, directly or through importlib. (tests/test_stats.py keeps an older text check of a
few modules; this one reads every module's syntax tree.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "emotion_core"
# top-level names: streamlit and any streamlit_* package (streamlit_webrtc, ...), and PyAV
FORBIDDEN_PREFIX = "streamlit"
FORBIDDEN = {"av"}


def _forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return top.startswith(FORBIDDEN_PREFIX) or top in FORBIDDEN


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """'file:line: import X' for every forbidden import anywhere in the source."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:  # `from . import x` stays inside the package
                modules = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                name in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                modules = [first.value]
        found += [(node.lineno, m) for m in modules if _forbidden(m)]
    return [f"{filename}:{line}: imports {module}" for line, module in sorted(found)]


def test_no_core_module_imports_streamlit_webrtc_or_av() -> None:
    files = sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)
    assert len(files) > 10, f"emotion_core looks empty: {files}"
    found = []
    for path in files:
        found += forbidden_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "emotion_core must not import the UI stack:\n" + "\n".join(found)


def test_the_rule_sees_every_form_of_import() -> None:
    source = """
import os, streamlit as st
from streamlit.runtime import exists
import streamlit_webrtc
from av.video import VideoFrame
import importlib

def later():
    import av
    return importlib.import_module("streamlit_webrtc")

def fine():
    import avro, streamlined_tool, numpy.av
    from . import av
    from .streamlit import x
    return __import__("os")
"""
    found = forbidden_imports(source, "mod.py")
    assert found == [
        "mod.py:2: imports streamlit",
        "mod.py:3: imports streamlit.runtime",
        "mod.py:4: imports streamlit_webrtc",
        "mod.py:5: imports av.video",
        "mod.py:9: imports av",
        "mod.py:10: imports streamlit_webrtc",
    ], found
