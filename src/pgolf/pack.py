"""Pack the training script into the smaller form that ships: docstrings and comments stripped (through the AST),
then compressed into a self-extracting script. The cap counts code bytes, so every byte saved here is a byte of model.

The packed file is a valid Python program that runs the same code: it decompresses the source and executes it in its
own module namespace, so ``__name__``, ``__file__`` (the packed file: its size is what the script reports as code
bytes) and ``__doc__`` (the original module docstring's first line, used by the script's --help) behave as before.
"""

from __future__ import annotations

import argparse
import ast
import base64
import lzma
import os
from pathlib import Path

STUB = '"""{doc}"""\nimport base64,lzma\nexec(compile(lzma.decompress(base64.b85decode("{blob}")),__file__,"exec"))\n'


def minify(source: str) -> tuple[str, str]:
    """(source without docstrings or comments, the module docstring's first line)."""
    tree = ast.parse(source)
    doc = (ast.get_docstring(tree) or "").splitlines()[:1]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n", (doc[0] if doc else "")


def pack(source: str) -> str:
    code, doc = minify(source)
    if '"""' in doc or "\\" in doc:
        raise ValueError("the module docstring's first line cannot go into the packed stub (quotes or backslash)")
    blob = base64.b85encode(lzma.compress(code.encode(), preset=9 | lzma.PRESET_EXTREME)).decode()
    packed = STUB.format(doc=doc, blob=blob)
    compile(packed, "<packed>", "exec")  # the stub itself must be valid Python
    return packed


def cmd_pack(args: argparse.Namespace) -> int:
    src = Path(args.script)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: file not found")
    text = src.read_text(encoding="utf-8")
    try:
        out_text = pack(text) if args.pack else text
    except SyntaxError as e:
        raise ValueError(f"{src}: not valid Python ({e.msg}, line {e.lineno})") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.write_text(out_text, encoding="utf-8")
    os.replace(tmp, out)
    print(f"pack: {src} ({len(text.encode())} bytes) -> {out} ({len(out_text.encode())} bytes, packed={args.pack})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="write the script that ships: packed (minified + compressed) or a plain copy")
    p.add_argument("--script", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=True)
    p.set_defaults(func=cmd_pack)
