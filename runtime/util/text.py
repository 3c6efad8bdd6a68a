"""How frameqc says things: one-line reasons and timestamps, in one form everywhere."""

from __future__ import annotations

import os
import re
import time


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line for an operator: its first line, else its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


#: Where a library's message turns from the fact to advice meant for its own API's users
#: ("..., try with ignore_missing_simple=True", "Consider setting ..."): a clause or
#: sentence opening with one of these words.
_ADVICE = re.compile(
    r"(?:[.;,:!?]\s+|\s+[(\[-]\s*|\s+(?=if this\b))(?:if this is really\b|if you\b|try\b|"
    r"please\b|consider\b|you (?:may|might|can|could|should|must)\b|use\b|set\b|pass\b|"
    r"see\b|fix it\b|to fix\b|to (?:allow|disable|ignore)\b|perhaps\b|maybe\b)",
    re.IGNORECASE)
#: A Python object's repr in a message (``<_io.BytesIO object at 0x...>``): no fact for us.
_REPR = re.compile(r"\s*<[\w.]+(?: object at 0x[0-9a-f]+| name=[^>]*)>")


def library_message(exc: BaseException, limit: int = 200) -> str:
    """A library's exception (astropy, PIL, zlib) as the fact alone, in one line.

    Advice written for the library's callers (its keyword arguments, its functions) is
    cut, and so are object reprs: an operator of frameqc can act on neither.
    """
    text = _REPR.sub("", first_line(exc, limit=1000))
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # a KeyError's repr
        text = text[1:-1]
    cut = _ADVICE.search(text)
    if cut is not None:
        text = text[: cut.start()]
    text = text.strip().rstrip(".,;:( ").strip()
    return text[:limit] if text else type(exc).__name__


def readable(text: str) -> str:
    r"""``text`` as frameqc writes it for people and for other programs: the one form.

    A file name is kept as its bytes (``surrogateescape``) to open the file; wherever it
    is written (text, JSON, CSV, ``--log``, line protocol, stderr) each byte that is not
    UTF-8 becomes ``\xHH`` (``x\xff.fits``), and any other lone surrogate ``\uXXXX``.
    Text that is valid UTF-8 is returned unchanged (docs/classifying.md).
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(_escaped(c) for c in text)


#: A byte that is not UTF-8 as :func:`readable` writes it (80-ff: never a character alone).
_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def on_disk(name: str) -> str:
    r"""The file a name read back from frameqc's output names: ``name`` where that exists,
    else with each ``\xHH`` (a byte that is not UTF-8, as :func:`readable` wrote it) made
    that byte again where that file exists; else ``name``. A name whose own text holds
    ``\x80``-``\xff`` is taken as written first, so no file is mistaken for another."""
    if "\\x" not in name or os.path.lexists(name):
        return name
    real = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), name)
    return real if os.path.lexists(real) else name  # lexists: False for a name with a NUL


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if 0xD800 <= code <= 0xDFFF else char


def local_time() -> str:
    """Now, local time with its UTC offset (``2025-07-08T23:10:04+0000``): log lines."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

