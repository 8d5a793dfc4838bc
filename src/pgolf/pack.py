"""Pack the training script into the smaller form that ships: docstrings and comments stripped (through the AST),
then compressed into a self-extracting script. The cap counts code bytes, so every byte saved here is a byte of model.

The packed file is a valid Python program that runs the same code in its own module namespace, so ``__name__``,
``__file__`` (the packed file: its size is what the script reports as code bytes) and ``__doc__`` (the original module
docstring's first line, used by the script's --help) behave as before. Code exec'd from a string has no source that
``inspect`` can read, and Triton's ``@triton.jit`` (like torch.compile's tracing and error messages) reads its kernels'
source through ``inspect``: so the packed file gives its code a real file. It writes the code to
``<temp dir>/pgolf_<sha256 of the code>/<its own name>`` (atomically: torchrun's ranks may race; content-addressed:
the same for every rank and every run, so Triton's and Inductor's caches stay warm), registers the same text in
``linecache`` under that name (so ``inspect`` works even where the file cannot be written, and is never misled by a
file someone else left there), and compiles the code under that file name. Inductor clears ``linecache`` in its
compile workers; the real file is what ``inspect`` falls back to then.

The compressed bytes are a string literal of a latin-1 file (``# coding: latin-1`` on line 1, PEP 263): each byte is
one character, the raw byte itself except the few that a triple-quoted literal cannot hold as they are (``_literal``:
backslash, NUL, CR, and a quote that would close the literal), turned back into bytes by ``.encode("latin-1")``. That
costs about 1% over the compressed size, where the base85 of earlier versions cost 25%. The packed file is therefore
bytes, not UTF-8 text: read it as bytes (Python, ``ast.parse`` and ``compile`` honour its coding line) or through
``decode_source``.

``pgolf pack`` never makes a script larger: a script that is already packed (by pgolf, in this form or the earlier
base85 one) or wrapped (an upstream record's ``exec(lzma.decompress(base64.b85decode(...)))``) is unwrapped first and
packed again, and whenever the result would not be smaller than the input the input ships unchanged.
"""

from __future__ import annotations

import argparse
import ast
import base64
import bz2
import copy
import gzip
import io
import lzma
import os
import re
import tokenize
import zlib
from pathlib import Path

HUMAN_NAME = "train_gpt_human.py"  # the readable copy that ships beside a packed train_gpt.py in a record
NOTE = (
    "Packed by `pgolf pack`: the readable source less docstrings, comments and unused annotations, lzma-compressed\n"
    "(the compressed bytes are the latin-1 string below).\n"
    "In a pgolf record the readable source ships beside this file as {human} (not counted). When run, this file\n"
    "writes its code to <temp dir>/pgolf_<sha256[:16]>/<its name> and runs it from there (Triton reads source)."
)
CODING = "# coding: latin-1\n"  # PEP 263: the file is latin-1, one character per byte
_TAIL = (
    "_f=os.path.join(tempfile.gettempdir(),'pgolf_'+hashlib.sha256(_c).hexdigest()[:16],"
    "os.path.basename(globals().get('__file__','train_gpt.py')))\n"
    "try:\n"
    " with open(_f,'rb') as _h:_o=_h.read()\n"
    "except OSError:_o=None\n"
    "if _o!=_c:\n"
    " try:\n"
    "  os.makedirs(os.path.dirname(_f),exist_ok=True);_t=f'{{_f}}.{{os.getpid()}}.tmp'\n"
    "  with open(_t,'wb') as _h:_h.write(_c)\n"
    "  os.replace(_t,_f)\n"
    " except OSError:pass\n"
    "_c=_c.decode();linecache.cache[_f]=(len(_c),None,_c.splitlines(True),_f)\n"
    "exec(compile(_c,_f,'exec'))\n"
)
STUB = 'import hashlib,linecache,lzma,os,tempfile\n_c=lzma.decompress({blob}.encode("latin-1"))\n' + _TAIL
# The form of earlier versions (base85 text in a UTF-8 file): still recognised, unwrapped and packed again.
STUB_B85 = 'import base64,hashlib,linecache,lzma,os,tempfile\n_c=lzma.decompress(base64.b85decode("{blob}"))\n' + _TAIL
# LZMA1 in the .lzma container: the smallest header lzma.decompress still detects by itself; pb=0 suits text.
FILTERS = [{"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "pb": 0}]


def _literal_as(data: bytes, quote: str) -> str:
    """``data`` as a triple-quoted literal of a latin-1 file, quoted by ``quote``: every byte is its own character
    except backslash (an escape's start), NUL (no source may hold one), CR (the tokenizer reads CR and CRLF as LF), and
    a quote that would end the literal (the third of a run, or the last byte: it would merge with the closing quotes).
    LF stays raw: a triple-quoted literal spans lines."""
    out = [quote * 3]
    run = 0  # unescaped quotes just written
    last = len(data) - 1
    for i, b in enumerate(data):
        c = chr(b)
        if c == quote and run < 2 and i < last:
            out.append(c)
            run += 1
            continue
        run = 0
        if c == quote or c == "\\":
            out.append("\\" + c)
        elif c == "\r":
            out.append("\\r")
        elif c == "\0":  # \0 reads further octal digits: \x00 where one follows
            out.append("\\x00" if i < last and 0x30 <= data[i + 1] <= 0x37 else "\\0")
        else:
            out.append(c)
    out.append(quote * 3)
    return "".join(out)


def _literal(data: bytes) -> str:
    """The shorter of ``data``'s two triple-quoted latin-1 literals (``_literal_as``); ``"`` on a tie. Its text
    encodes to latin-1 (one byte per character) and, in a file that declares that coding, evaluates to
    ``data.decode("latin-1")``."""
    return min((_literal_as(data, q) for q in ('"', "'")), key=len)


def decode_source(data: bytes) -> str:
    """The text of a Python source file as Python reads it: decoded by its PEP 263 coding line (a packed script's is
    latin-1), else as UTF-8 (a BOM is dropped). ValueError when the bytes are not in that coding."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as e:
        raise ValueError(f"cannot decode the source ({e})") from None


def read_source_text(path: str | os.PathLike) -> str:
    """A source file's text for a text search: decoded as Python decodes it (``decode_source``), else as UTF-8 with
    undecodable bytes replaced. Never raises for the file's contents."""
    data = Path(path).read_bytes()
    try:
        return decode_source(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")


_CODING_LINE = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


def _source_bytes(source: str | bytes) -> bytes:
    """The bytes of a source given as bytes or as text: text is written in the coding its first two lines declare
    (PEP 263), else UTF-8."""
    if isinstance(source, bytes):
        return source
    for line in source.splitlines()[:2]:
        m = _CODING_LINE.match(line)
        if m:
            try:
                return source.encode(m.group(1))
            except (LookupError, UnicodeEncodeError):
                break
        if line.strip() and not line.lstrip().startswith("#"):
            break
    return source.encode("utf-8")


def _is_str(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _strip_strings(tree: ast.AST) -> ast.AST:
    """Drop every statement that is a bare string constant: docstrings, and the no-op strings some scripts use as
    comments (a string left first in a body would be written back as a multi-line docstring)."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [s for s in body if not (isinstance(s, ast.Expr) and _is_str(s.value))]
            if len(kept) != len(body):
                setattr(node, field, kept or [ast.Pass()])
    return tree


# Decorators under which a function's annotations mean something at run time: Triton kernels (``tl.constexpr``),
# torch custom ops (their schema), TorchScript, singledispatch.
_ANNOTATED = ("jit", "triton", "custom_op", "library", "script", "dispatch", "autotune", "heuristics")


def _strip_annotations(tree: ast.AST) -> ast.AST:
    """Drop the annotations of function signatures (and of assignments inside functions), which nothing reads at
    run time, except under the decorators of ``_ANNOTATED``; class bodies (dataclass and NamedTuple fields) keep
    theirs."""

    def keeps(fn) -> bool:
        return any(word in ast.unparse(d) for d in fn.decorator_list for word in _ANNOTATED)

    def strip_body(body: list) -> list:
        out = []
        for stmt in body:
            if isinstance(stmt, ast.AnnAssign) and stmt.simple and stmt.value is not None:
                stmt = ast.copy_location(ast.Assign(targets=[stmt.target], value=stmt.value), stmt)
            out.append(stmt)
        return out

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not keeps(node):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None:
                    arg.annotation = None
            node.returns = None
            for inner in ast.walk(node):
                for field in ("body", "orelse", "finalbody"):
                    body = getattr(inner, field, None)
                    if isinstance(body, list) and not isinstance(inner, ast.ClassDef):
                        setattr(inner, field, strip_body(body))
    return ast.fix_missing_locations(tree)


def _reindent(code: str) -> str:
    """ast.unparse indents by 4 spaces per level and writes each statement on one line: one space per level."""
    out = []
    for line in code.splitlines(keepends=True):
        n = len(line) - len(line.lstrip(" "))
        out.append(" " * (n // 4) + line[n:])
    return "".join(out)


def minify(source: str) -> tuple[str, str]:
    """(source without docstrings, no-op strings, comments or the annotations nothing reads (``_strip_annotations``),
    one space per indent level; the module docstring's first line). The result is checked to parse to the same syntax
    tree as the source less those."""
    tree = ast.parse(source)
    doc = (ast.get_docstring(tree) or "").splitlines()[:1]
    expected = ast.dump(_strip_annotations(_strip_strings(tree)))
    code = ast.unparse(tree) + "\n"
    short = _reindent(code)
    if ast.dump(ast.parse(short)) != expected:  # never seen; the 4-space form is the fallback
        short = code
        if ast.dump(ast.parse(short)) != expected:
            raise ValueError("ast.unparse did not round-trip this source")
    return short, (doc[0] if doc else "")


_DECODERS = {
    ("lzma", "decompress"): lzma.decompress,
    ("zlib", "decompress"): zlib.decompress,
    ("bz2", "decompress"): bz2.decompress,
    ("gzip", "decompress"): gzip.decompress,
    **{("base64", n): getattr(base64, n) for n in ("b85decode", "a85decode", "b64decode", "b32decode", "b16decode")},
}


class _NotConstant(Exception):
    pass


def _evaluate(node: ast.expr, modules: dict[str, str], names: dict[str, object]):
    """The value of a wrapper's decoding expression: constants, the decoders above called through their modules'
    import names, module constants (``lzma.FORMAT_RAW``), ``.decode()``, ``compile(x, ...)`` (x). Anything else (a
    file read, a name bound to something else) raises _NotConstant."""

    def ev(n):
        return _evaluate(n, modules, names)

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [ev(e) for e in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {ev(k): ev(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
        if node.attr.isupper() and modules[node.value.id] == "lzma":
            return getattr(lzma, node.attr)
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name) and f.id == "compile" and node.args:  # compile(source, filename, mode)
            source = ev(node.args[0])
            if isinstance(source, (str, bytes)):
                return source
            raise _NotConstant
        args = [ev(a) for a in node.args]
        kwargs = {k.arg: ev(k.value) for k in node.keywords if k.arg is not None}
        if len(kwargs) != len(node.keywords):
            raise _NotConstant
        if isinstance(f, ast.Name) and f.id in modules and "." in modules[f.id]:  # from lzma import decompress
            fn = _DECODERS.get(tuple(modules[f.id].split(".", 1)))
            if fn is not None:
                return fn(*args, **kwargs)
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules:
            fn = _DECODERS.get((modules[f.value.id], f.attr))
            if fn is not None:
                return fn(*args, **kwargs)
        if isinstance(f, ast.Attribute) and f.attr == "decode":
            value = ev(f.value)
            if isinstance(value, bytes):
                return value.decode(*args, **kwargs)
        if isinstance(f, ast.Attribute) and f.attr == "encode":  # a latin-1 string literal of bytes
            value = ev(f.value)
            if isinstance(value, str):
                return value.encode(*args, **kwargs)
    raise _NotConstant


_DECODE_ERRORS = (_NotConstant, ValueError, TypeError, lzma.LZMAError, zlib.error, OSError, EOFError)


def _blob(body: list[ast.stmt], empty: str, where) -> str | None:
    """The string constant that ``where`` picks from the second statement of ``body``, when ``body`` is the source
    ``empty`` (a stub whose blob is "") with some string for that blob; else None."""
    try:
        node = where(body[1].value)
    except (AttributeError, IndexError):
        return None
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return None
    blank = copy.deepcopy(body)
    where(blank[1].value).value = ""
    if ast.dump(ast.Module(body=blank, type_ignores=[])) != ast.dump(ast.parse(empty)):
        return None
    return node.value


def _unpack_pgolf(body: list[ast.stmt]) -> str | None:
    """The code of pgolf's own packed form (``STUB``, or ``STUB_B85`` of earlier versions; any blob), else None."""
    try:
        blob = _blob(body, STUB.format(blob='""'), lambda v: v.args[0].func.value)
        if blob is not None:
            return lzma.decompress(blob.encode("latin-1")).decode("utf-8")
        blob = _blob(body, STUB_B85.format(blob=""), lambda v: v.args[0].args[0])
        if blob is not None:
            return lzma.decompress(base64.b85decode(blob)).decode("utf-8")
    except (ValueError, lzma.LZMAError):  # UnicodeError is a ValueError
        return None
    return None


def unwrap(source: str | bytes) -> str | None:
    """The source a self-extracting wrapper runs (pgolf's packed form, or an upstream record's
    ``exec(lzma.decompress(base64.b85decode("...")))``), or None when ``source`` is not such a wrapper. ``source`` is a
    file's bytes (decoded as its coding line says, as Python does) or its text.

    Besides pgolf's own form, a wrapper is a module of imports and assignments ending in one ``exec(...)`` of an
    expression that decodes a constant. It is not unwrapped when the code it runs reads a name the wrapper binds (e.g.
    an upstream ``__wrapper_size__``): unwrapped, that code would change."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: NUL bytes, on older Pythons
        return None
    body = list(tree.body)
    if ast.get_docstring(tree) is not None:
        body = body[1:]
    ours = _unpack_pgolf(body)
    if ours is not None:
        return ours
    if not body or not isinstance(body[-1], ast.Expr):
        return None
    call = body[-1].value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "exec"):
        return None
    if len(call.args) != 1 or call.keywords:
        return None
    modules: dict[str, str] = {}
    names: dict[str, object] = {}
    bound: set[str] = set()
    for stmt in body[:-1]:
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                name = a.asname or a.name.split(".")[0]
                modules[name] = a.name if a.asname else name
                bound.add(name)
        elif isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
            for a in stmt.names:
                modules[a.asname or a.name] = f"{stmt.module}.{a.name}"
                bound.add(a.asname or a.name)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            bound.add(name)
            modules.pop(name, None)
            try:
                names[name] = _evaluate(stmt.value, modules, names)
            except _DECODE_ERRORS:
                names.pop(name, None)
        else:
            return None
    try:
        inner = _evaluate(call.args[0], modules, names)
    except _DECODE_ERRORS:
        return None
    if isinstance(inner, bytes):
        try:
            inner = inner.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(inner, str):
        return None
    try:
        inner_tree = ast.parse(inner)
    except SyntaxError:
        return None
    used = {n.id for n in ast.walk(inner_tree) if isinstance(n, ast.Name)}
    used |= {n.value for n in ast.walk(inner_tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    if (bound - set(modules)) & used:
        return None
    return inner


def _first_doc_line(source: str) -> str:
    lines = (ast.get_docstring(ast.parse(source)) or "").splitlines()
    return lines[0] if lines else ""


def _docstring(text: str) -> str:
    """A literal of ``text`` for a latin-1 file: characters past U+00FF as escapes."""
    if any(s in text for s in ('"""', "\\", "\r", "\0")) or text.endswith('"'):
        text = repr(text)
    else:
        text = f'"""{text}"""'
    return "".join(c if ord(c) < 256 else c.encode("unicode_escape").decode("ascii") for c in text)


def pack(source: str | bytes, human: str = HUMAN_NAME) -> bytes:
    """The packed form of ``source`` (a file's bytes or its text; itself unwrapped first when it is a wrapper:
    ``unwrap``): the bytes of a latin-1 file. Raises SyntaxError when the source is not valid Python, ValueError when
    its bytes are not in its coding."""
    if isinstance(source, bytes):
        source = decode_source(source)
    docs = [_first_doc_line(source)]
    for _ in range(8):  # wrappers of wrappers
        inner = unwrap(source)
        if inner is None:
            break
        source = inner
        docs.append(_first_doc_line(source))
    code, _ = minify(source)
    doc = next((d for d in docs if d), "")  # a wrapper's docstring (pgolf's keeps the source's first line) first
    blob = _literal(lzma.compress(code.encode("utf-8"), format=lzma.FORMAT_ALONE, filters=FILTERS))
    head = CODING + _docstring(f"{doc}\n\n{NOTE.format(human=human)}\n") + "\n"
    packed = (head + STUB.format(blob=blob)).encode("latin-1")
    compile(packed, "<packed>", "exec")  # the file, read as Python reads it, must be valid Python
    if unwrap(packed) != code:
        raise AssertionError("the packed stub does not decode to the code it packs")
    return packed


def ship(source: str | bytes, human: str = HUMAN_NAME) -> tuple[bytes, str]:
    """(the bytes that ship, how): the packed form, or the source itself (its bytes: ``source`` if bytes, else its
    text in its declared coding or UTF-8) when packing would not make it smaller (already packed, a small launcher)."""
    data = _source_bytes(source)
    packed = pack(source, human)
    if len(packed) < len(data):
        return packed, "packed"
    return data, "kept as is (packing would not make it smaller)"


def cmd_pack(args: argparse.Namespace) -> int:
    src = Path(args.script)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: file not found")
    data = src.read_bytes()
    try:
        shipped, how = ship(data, args.human_name) if args.pack else (data, "copied (--no-pack)")
    except SyntaxError as e:
        raise ValueError(f"{src}: not valid Python ({e.msg}, line {e.lineno})") from None
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.write_bytes(shipped)
    os.replace(tmp, out)
    print(f"pack: {src} ({len(data)} bytes) -> {out} ({len(shipped)} bytes, {how})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="write the script that ships: packed (minified + compressed) or a plain copy")
    p.add_argument("--script", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--human-name", default=HUMAN_NAME, help="the readable copy's name, for the packed docstring")
    p.set_defaults(func=cmd_pack)
