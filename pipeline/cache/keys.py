"""Video ids <-> HDF5 names: a video's group name is `encode_key(id)`, an injective encoding
(percent-encoding of '%', '/', unprintable characters, a leading '.' and the bytes of names
that are not UTF-8), so every id, whatever file name it came from, has a group of its own;
`decode_key` gives it back exactly. The `id` and `source_path` attrs hold the exact text
(`text_attr`: a UTF-8 string, or its bytes when it is not valid UTF-8; `attr_text` reads it).
Readers take ids from the attrs and remember each group's name, so caches written with the
older rule ('/' -> '|') stay readable."""

from __future__ import annotations

import numpy as np


def _needs_escape(c: str, first: bool) -> bool:
    return c in "%/" or not c.isprintable() or (first and c == ".")


def encode_key(video_id: str) -> str:
    """The HDF5 group name of an id: '%', '/', unprintable characters (lone surrogates of
    names that are not UTF-8 included) and a leading '.' become %XX of their UTF-8 bytes.
    Injective ('%' is always escaped) and total; "" -> "%"."""
    if not video_id:
        return "%"
    out = []
    for i, c in enumerate(video_id):
        if _needs_escape(c, i == 0):
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")))
        else:
            out.append(c)
    return "".join(out)


def decode_key(key: str) -> str:
    """The id of a group name written by `encode_key` (exactly)."""
    if key == "%":
        return ""
    out, pending, i = [], bytearray(), 0
    while i < len(key):
        if key[i] == "%":
            pending.append(int(key[i + 1 : i + 3], 16))
            i += 3
            continue
        if pending:
            out.append(pending.decode("utf-8", "surrogatepass"))
            pending.clear()
        out.append(key[i])
        i += 1
    if pending:
        out.append(pending.decode("utf-8", "surrogatepass"))
    return "".join(out)


def text_attr(text: str) -> str | np.bytes_:
    """An attribute value holding `text` exactly: a UTF-8 string, or its bytes when it holds
    surrogates (a file name that is not UTF-8)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return np.bytes_(text.encode("utf-8", "surrogatepass"))


def attr_text(value) -> str:
    """The text `text_attr` stored (h5py gives bytes back as a str with escaped bytes)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, np.bytes_, np.void)):
        return bytes(value).decode("utf-8", "surrogatepass")
    return str(value)
