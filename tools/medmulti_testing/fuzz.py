"""Seeded, deterministic mutators for DICOM and NIfTI bytes.

Every mutation is a pure function of ``(seed bytes, format, base seed, index)``:
the same arguments give the same bytes on every machine and Python version
(randomness comes from :class:`random.Random` seeded with a SHA-256 of the
arguments, never from :func:`hash`). A failing input is therefore reproducible
from its name alone, e.g. ``MR_small.dcm#417``.

Mutators
--------
Byte level (any format): bit flips, interesting byte values, truncation at a
random offset, inserted garbage.

DICOM structure aware (via :func:`dicom_elements`, a walker of the well-formed
seed): a length field set to 0, an odd value, ``0xFFFF``/``0xFFFFFFFF`` or a huge
value; an element duplicated, two adjacent elements swapped, an element deleted;
the explicit VR replaced by another VR; Rows/Columns/NumberOfFrames/BitsAllocated/
SamplesPerPixel/PixelRepresentation set to hostile values. Deflated datasets are
mutated inside the deflate stream and re-deflated (and sometimes outside).

NIfTI structure aware: ``dim[]`` blown up or negative, ``datatype``/``bitpix``
mismatched, ``vox_offset``/``pixdim``/``scl_slope``/quaternion/``srow`` set to
NaN, inf, 0, negative or huge, ``sizeof_hdr``/magic broken, a bogus extension.
``.nii.gz`` inputs are mutated inside the gzip member and re-compressed (and
sometimes as compressed bytes).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = [
    "Element",
    "Mutation",
    "dicom_elements",
    "mutate",
    "mutations",
    "rng_for",
    "DICOM_MUTATORS",
    "NIFTI_MUTATORS",
    "BYTE_MUTATORS",
]

# ---------------------------------------------------------------------------
# determinism


def rng_for(*parts: object) -> random.Random:
    """Return a :class:`random.Random` seeded from a SHA-256 of ``parts``.

    Parameters
    ----------
    *parts : object
        Anything with a stable ``repr`` (strings, ints, tuples).

    Returns
    -------
    random.Random
        A generator that gives the same sequence on every run and platform.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ---------------------------------------------------------------------------
# DICOM element walker

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ALL_VRS = sorted(
    _LONG_VRS
    | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
       b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_DELIM, _SEQ_DELIM = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
IMPLICIT_LE, EXPLICIT_BE, DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"


@dataclass(frozen=True)
class Element:
    """Byte layout of one data element (or item / delimiter) in a DICOM stream.

    Attributes
    ----------
    offset : int
        Offset of the tag.
    tag : int
        ``group << 16 | element``.
    vr : bytes or None
        Explicit VR bytes, ``None`` for implicit VR, items and delimiters.
    vr_offset : int or None
        Offset of the VR bytes.
    length_offset, length_size : int
        Where the length field is and its width (2 or 4 bytes).
    length : int
        The declared length (``0xFFFFFFFF`` for undefined).
    value_offset : int
        First byte of the value.
    end : int
        One past the last byte of the element (after its delimiter when undefined).
    little : bool
        Byte order.
    depth : int
        Sequence nesting depth (0 = top level).
    """

    offset: int
    tag: int
    vr: bytes | None
    vr_offset: int | None
    length_offset: int
    length_size: int
    length: int
    value_offset: int
    end: int
    little: bool
    depth: int


@dataclass(frozen=True)
class _Layout:
    elements: list[Element]
    body_offset: int  # where the dataset (after file meta) starts
    transfer_syntax: str


def _implicit_is_sq(tag: int) -> bool:
    try:
        from pydicom.datadict import dictionary_VR

        return dictionary_VR(tag) == "SQ"
    except Exception:  # unknown / private tag
        return False


def _walk(data: bytes, pos: int, end: int, little: bool, implicit: bool, depth: int, out: list[Element],
          stop_at_group: int | None = None) -> int:
    e = "<" if little else ">"
    while pos + 8 <= end:
        group, elem = struct.unpack_from(e + "HH", data, pos)
        tag = group << 16 | elem
        if stop_at_group is not None and group != stop_at_group:
            return pos
        if tag in (_ITEM_DELIM, _SEQ_DELIM):
            out.append(Element(pos, tag, None, None, pos + 4, 4, struct.unpack_from(e + "I", data, pos + 4)[0],
                               pos + 8, pos + 8, little, depth))
            return pos + 8
        if implicit or tag == _ITEM:
            vr, vr_off, loff, lsize = None, None, pos + 4, 4
        else:
            vr = data[pos + 4:pos + 6]
            vr_off = pos + 4
            if vr in _LONG_VRS:
                loff, lsize = pos + 8, 4
            else:
                loff, lsize = pos + 6, 2
        if loff + lsize > end:
            return end
        length = struct.unpack_from(e + ("I" if lsize == 4 else "H"), data, loff)[0]
        voff = loff + lsize
        idx = len(out)
        out.append(Element(pos, tag, vr, vr_off, loff, lsize, length, voff, voff, little, depth))
        is_sq = vr == b"SQ" or (vr is None and tag != _ITEM and (length == _UNDEFINED or _implicit_is_sq(tag)))
        if tag == _ITEM:
            if length == _UNDEFINED:
                stop = _walk(data, voff, end, little, implicit, depth + 1, out)
            else:
                _walk(data, voff, min(end, voff + length), little, implicit, depth + 1, out)
                stop = voff + length
        elif length == _UNDEFINED and tag == _PIXEL_DATA:
            stop = voff  # encapsulated fragments
            while stop + 8 <= end:
                t = struct.unpack_from(e + "HH", data, stop)
                ftag = t[0] << 16 | t[1]
                flen = struct.unpack_from(e + "I", data, stop + 4)[0]
                out.append(Element(stop, ftag, None, None, stop + 4, 4, flen, stop + 8,
                                   stop + 8 + (0 if ftag == _SEQ_DELIM else flen), little, depth + 1))
                stop += 8 + (0 if ftag == _SEQ_DELIM else flen)
                if ftag == _SEQ_DELIM:
                    break
        elif is_sq or length == _UNDEFINED:
            # UN with undefined length is implicit VR little endian (PS3.5 6.2.2)
            imp = implicit or vr == b"UN"
            lit = little or vr == b"UN"
            if length == _UNDEFINED:
                stop = _walk(data, voff, end, lit, imp, depth + 1, out)
            else:
                _walk(data, voff, min(end, voff + length), lit, imp, depth + 1, out)
                stop = voff + length
        else:
            stop = voff + length
        old = out[idx]
        out[idx] = Element(old.offset, old.tag, old.vr, old.vr_offset, old.length_offset, old.length_size,
                           old.length, old.value_offset, min(stop, end), old.little, old.depth)
        pos = stop
    return pos


def dicom_elements(data: bytes) -> tuple[list[Element], int, str]:
    """Walk a (well-formed) DICOM stream and return the layout of every element.

    Parameters
    ----------
    data : bytes
        A Part 10 file (preamble + ``DICM`` + file meta) or a raw implicit-VR
        little-endian dataset. For a deflated transfer syntax only the file meta
        is walked; see :func:`split_deflated`.

    Returns
    -------
    elements : list of Element
        Every element, item and delimiter in stream order, nested ones included.
    body_offset : int
        Offset where the dataset after the file meta starts.
    transfer_syntax : str
        The TransferSyntaxUID (implicit VR little endian when there is no meta).

    Notes
    -----
    Meant for the fuzzer's seeds, which are valid files; on malformed input it
    returns what it could walk and never raises for ordinary damage.
    """
    out: list[Element] = []
    ts = IMPLICIT_LE
    body = 0
    try:
        if data[128:132] == b"DICM":
            body = _walk(data, 132, len(data), True, False, 0, out, stop_at_group=0x0002)
            for el in out:
                if el.tag == 0x00020010:
                    ts = data[el.value_offset:el.value_offset + el.length].rstrip(b"\0 ").decode("ascii", "replace")
        if ts == DEFLATED:
            return out, body, ts
        _walk(data, body, len(data), ts != EXPLICIT_BE, ts == IMPLICIT_LE, 0, out)
    except (struct.error, RecursionError):
        pass
    return out, body, ts


def split_deflated(data: bytes) -> tuple[bytes, bytes] | None:
    """Split a deflated-transfer-syntax file into ``(meta bytes, inflated body)``.

    Returns ``None`` when ``data`` is not a deflated DICOM file.
    """
    elements, body, ts = dicom_elements(data)
    if ts != DEFLATED:
        return None
    try:
        inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[body:], 64 * 2**20)
    except zlib.error:
        return None
    return data[:body], inflated


def _deflate(raw: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(raw) + c.flush()


# ---------------------------------------------------------------------------
# byte-level mutators

_INTERESTING8 = [0x00, 0x01, 0x7F, 0x80, 0xFF]


def _bitflip(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    if not buf:
        return bytes(buf)
    # bias towards the first 4 KiB, where headers live
    hot = min(len(buf), 4096)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(hot) if rng.random() < 0.8 else rng.randrange(len(buf))
        buf[pos] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _byteset(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    if not buf:
        return bytes(buf)
    hot = min(len(buf), 4096)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(hot)
        for k in range(rng.choice((1, 2, 4))):
            if pos + k < len(buf):
                buf[pos + k] = rng.choice(_INTERESTING8)
    return bytes(buf)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 2:
        return b""
    if rng.random() < 0.5:
        return data[: rng.randrange(min(len(data), 1024))]
    return data[: rng.randrange(len(data))]


def _insert_garbage(data: bytes, rng: random.Random) -> bytes:
    pos = rng.randrange(len(data) + 1)
    junk = bytes(rng.getrandbits(8) for _ in range(rng.choice((1, 2, 3, 4, 8, 13))))
    return data[:pos] + junk + data[pos:]


BYTE_MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bitflip": _bitflip,
    "byteset": _byteset,
    "truncate": _truncate,
    "insert_garbage": _insert_garbage,
}

# ---------------------------------------------------------------------------
# DICOM structure-aware mutators


def _pick(rng: random.Random, elements: list[Element], pred=None) -> Element | None:
    cands = [el for el in elements if pred is None or pred(el)]
    return rng.choice(cands) if cands else None


def _put_length(buf: bytearray, el: Element, value: int) -> None:
    e = "<" if el.little else ">"
    if el.length_size == 2:
        struct.pack_into(e + "H", buf, el.length_offset, value & 0xFFFF)
    else:
        struct.pack_into(e + "I", buf, el.length_offset, value & 0xFFFFFFFF)


def _length_field(data: bytes, rng: random.Random, elements: list[Element]) -> bytes:
    el = _pick(rng, elements)
    if el is None:
        return _bitflip(data, rng)
    buf = bytearray(data)
    full = 0xFFFF if el.length_size == 2 else 0xFFFFFFFF
    choice = rng.choice(("zero", "odd", "max", "huge", "plus", "minus"))
    value = {
        "zero": 0,
        "odd": (el.length | 1) if el.length != _UNDEFINED else 1,
        "max": full,
        "huge": full - rng.randrange(1, 64) * 2,
        "plus": el.length + rng.choice((1, 2, 8, 1024)),
        "minus": max(0, el.length - rng.choice((1, 2, 8))),
    }[choice]
    _put_length(buf, el, value)
    return bytes(buf)


def _dup_element(data: bytes, rng: random.Random, elements: list[Element]) -> bytes:
    el = _pick(rng, elements, lambda x: x.end > x.offset and x.end - x.offset < 1 << 20)
    if el is None:
        return _bitflip(data, rng)
    chunk = data[el.offset:el.end]
    return data[:el.end] + chunk + data[el.end:]


def _swap_elements(data: bytes, rng: random.Random, elements: list[Element]) -> bytes:
    pairs = []
    for a, b in zip(elements, elements[1:]):
        if a.depth == b.depth and a.end == b.offset and a.end > a.offset and b.end > b.offset:
            pairs.append((a, b))
    if not pairs:
        return _bitflip(data, rng)
    a, b = rng.choice(pairs)
    return data[:a.offset] + data[b.offset:b.end] + data[a.offset:a.end] + data[b.end:]


def _delete_element(data: bytes, rng: random.Random, elements: list[Element]) -> bytes:
    important = {0x00280010, 0x00280011, 0x00280100, 0x00280002, 0x7FE00010, 0x00020010, 0x00280008,
                 0x00280004, 0x00200032, 0x00200037, 0x00280030}
    if rng.random() < 0.6:
        el = _pick(rng, elements, lambda x: x.tag in important and x.end > x.offset)
    else:
        el = _pick(rng, elements, lambda x: x.end > x.offset)
    if el is None:
        return _truncate(data, rng)
    return data[:el.offset] + data[el.end:]


def _vr_swap(data: bytes, rng: random.Random, elements: list[Element]) -> bytes:
    el = _pick(rng, elements, lambda x: x.vr_offset is not None)
    if el is None:
        return _bitflip(data, rng)
    buf = bytearray(data)
    new = rng.choice(_ALL_VRS + [b"\0\0", b"ZZ", b"ox"])
    buf[el.vr_offset:el.vr_offset + 2] = new
    return bytes(buf)


_SIZE_TAGS = {
    0x00280010: ("US", (0, 1, 0xFFFF, 0x8000, 3)),  # Rows
    0x00280011: ("US", (0, 1, 0xFFFF, 0x8000, 3)),  # Columns
    0x00280100: ("US", (0, 1, 7, 12, 24, 64, 0xFFFF)),  # BitsAllocated
    0x00280101: ("US", (0, 1, 33, 0xFFFF)),  # BitsStored
    0x00280102: ("US", (0, 31, 0xFFFF)),  # HighBit
    0x00280002: ("US", (0, 2, 3, 4, 0xFFFF)),  # SamplesPerPixel
    0x00280103: ("US", (2, 0xFFFF)),  # PixelRepresentation
    0x00280006: ("US", (1, 7)),  # PlanarConfiguration
    0x00280008: ("IS", (b"9", b"0", b"-1", b" ", b"x")),  # NumberOfFrames
    0x00281053: ("DS", (b"0", b"nan", b"inf", b"-1e308", b"1e308")),  # RescaleSlope
    0x00281052: ("DS", (b"nan", b"inf", b"-inf", b"1e308")),  # RescaleIntercept
    0x00280030: ("DS", (b"0", b"-1", b"nan", b"inf", b"0\\0")),  # PixelSpacing
    0x00180050: ("DS", (b"0", b"-1", b"nan")),  # SliceThickness
    0x00200032: ("DS", (b"nan", b"inf", b"1e308")),  # ImagePositionPatient
    0x00200037: ("DS", (b"0", b"nan", b"1\\0\\0\\1\\0\\0")),  # ImageOrientationPatient
}


def _size_blowup(data: bytes, rng: random.Random, elements: list[Element]) -> bytes:
    el = _pick(rng, elements, lambda x: x.tag in _SIZE_TAGS and x.length not in (0, _UNDEFINED))
    if el is None:
        return _length_field(data, rng, elements)
    kind, values = _SIZE_TAGS[el.tag]
    buf = bytearray(data)
    v = rng.choice(values)
    if kind == "US":
        if el.length >= 2:
            struct.pack_into(("<" if el.little else ">") + "H", buf, el.value_offset, v)
    else:
        # string value: keep the length, fill with the hostile text (or all nines)
        n = el.length
        text = (b"9" * n) if v == b"9" else (v * (n // len(v) + 1))[:n] if v.startswith(b"0\\") else v.ljust(n)[:n]
        buf[el.value_offset:el.value_offset + n] = text
    return bytes(buf)


_DICOM_STRUCT: dict[str, Callable[[bytes, random.Random, list[Element]], bytes]] = {
    "length_field": _length_field,
    "dup_element": _dup_element,
    "swap_elements": _swap_elements,
    "delete_element": _delete_element,
    "vr_swap": _vr_swap,
    "size_blowup": _size_blowup,
}

DICOM_MUTATORS = [*BYTE_MUTATORS, *_DICOM_STRUCT]

# ---------------------------------------------------------------------------
# NIfTI structure-aware mutators

_N1 = {  # name: (offset, struct code)
    "sizeof_hdr": (0, "i"), "dim": (40, "h"), "datatype": (70, "h"), "bitpix": (72, "h"),
    "pixdim": (76, "f"), "vox_offset": (108, "f"), "scl_slope": (112, "f"), "scl_inter": (116, "f"),
    "qform_code": (252, "h"), "sform_code": (254, "h"), "quatern": (256, "f"), "qoffset": (268, "f"),
    "srow": (280, "f"), "magic": (344, "4s"), "extension": (348, "4s"), "dim_info": (39, "B"),
    "slice_start": (74, "h"), "slice_end": (120, "h"), "slice_code": (122, "B"), "xyzt_units": (123, "B"),
}
_N2 = {
    "sizeof_hdr": (0, "i"), "magic": (4, "8s"), "datatype": (12, "h"), "bitpix": (14, "h"),
    "dim": (16, "q"), "pixdim": (104, "d"), "vox_offset": (168, "q"), "scl_slope": (176, "d"),
    "scl_inter": (184, "d"), "slice_start": (224, "q"), "slice_end": (232, "q"), "qform_code": (344, "i"),
    "sform_code": (348, "i"), "quatern": (352, "d"), "qoffset": (376, "d"), "srow": (400, "d"),
    "slice_code": (496, "i"), "xyzt_units": (500, "i"), "dim_info": (524, "B"), "extension": (540, "4s"),
}
_NAN = float("nan")
_INF = float("inf")


def _nifti_layout(data: bytes) -> tuple[dict, str] | None:
    if len(data) < 348:
        return None
    for e in "<>":
        size = struct.unpack_from(e + "i", data, 0)[0]
        if size == 348:
            return _N1, e
        if size == 540:
            return _N2, e
    return None


def _nifti_field(data: bytes, rng: random.Random) -> bytes:
    lay = _nifti_layout(data)
    if lay is None:
        return _bitflip(data, rng)
    fields, e = lay
    n2 = fields is _N2
    buf = bytearray(data)
    name = rng.choice(
        ["dim"] * 4 + ["datatype", "bitpix", "pixdim", "vox_offset", "scl_slope", "scl_inter", "qform_code",
                       "sform_code", "quatern", "qoffset", "srow", "sizeof_hdr", "magic", "extension",
                       "dim_info", "slice_start", "slice_end", "slice_code", "xyzt_units"]
    )
    off, code = fields[name]
    width = struct.calcsize(code)

    def put(index: int, value) -> None:
        pos = off + index * width
        if pos + width <= len(buf):
            struct.pack_into(e + code, buf, pos, value)

    if name == "dim":
        k = rng.randrange(8)
        big = (2**40, 2**62, -(2**40), 30000) if n2 else (30000, 32767, -32768, 20000)
        if k == 0:
            put(0, rng.choice((0, -1, 7, 8, 9, 1, 2)))
        else:
            put(k, rng.choice((0, -1, 1, 2) + big))
    elif name == "datatype":
        put(0, rng.choice((0, 1, 128, 2304, 32, 1792, 2048, 1536, 255, 9999, -1, 16)))
    elif name == "bitpix":
        put(0, rng.choice((0, 1, 7, 9, 1024, -8)))
    elif name in ("pixdim", "quatern", "qoffset", "srow"):
        count = {"pixdim": 8, "quatern": 3, "qoffset": 3, "srow": 12}[name]
        put(rng.randrange(count), rng.choice((_NAN, _INF, -_INF, 0.0, -1.0, 1e30, 2.0)))
    elif name == "vox_offset":
        put(0, rng.choice((0, 1, 351, 2**31 - 1, -1, 10**6)) if code == "q" else
            rng.choice((0.0, 1.0, 351.0, 1e12, -1.0, _NAN, _INF, 353.0)))
    elif name in ("scl_slope", "scl_inter"):
        put(0, rng.choice((_NAN, _INF, -_INF, 0.0, 1e38 if code == "f" else 1e300, -1e38 if code == "f" else -1e300)))
    elif name in ("qform_code", "sform_code"):
        put(0, rng.choice((0, 1, 2, 5, -1, 99)))
    elif name == "sizeof_hdr":
        put(0, rng.choice((0, 347, 349, 540 if not n2 else 348, -348)))
    elif name == "magic":
        put(0, rng.choice((b"n+2\0", b"ni1\0", b"xxxx", b"\0\0\0\0") if not n2 else
                          (b"n+1\0", b"ni2\0\r\n\x1a\n", b"n+2\0\0\0\0\0", b"xxxxxxxx")))
    elif name == "extension":
        # flag an extension and append (or not) a bogus header for it
        put(0, b"\x01\0\0\0")
        pos = off + 4
        esize = rng.choice((0, 7, 8, 16, 2**31 - 8, 0xFFFFFFF0 - 2**32, 24))
        ext = struct.pack(e + "ii", esize, rng.choice((0, 2, 4, 6, 40, -1))) + b"x" * 16
        buf[pos:pos] = ext
    elif name in ("slice_start", "slice_end", "slice_code", "xyzt_units", "dim_info"):
        put(0, rng.choice((0, 255, 127)) if code == "B" else rng.choice((-1, 2**15 - 1 if code == "h" else 2**31 - 1)))
    return bytes(buf)


def _nifti_multi(data: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(2, 4)):
        data = _nifti_field(data, rng)
    return data


NIFTI_MUTATORS = [*BYTE_MUTATORS, "nifti_field", "nifti_field", "nifti_field", "nifti_multi"]


def _gzip(raw: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as fh:
        fh.write(raw)
    return out.getvalue()


# ---------------------------------------------------------------------------
# dispatch


@dataclass(frozen=True)
class Mutation:
    """One mutated input.

    Attributes
    ----------
    name : str
        ``"<seed>#<index>"``; regenerate the bytes with :func:`mutate`.
    mutator : str
        Which mutator(s) produced it (``"inner:"`` prefix: applied inside a
        deflate/gzip layer).
    data : bytes
        The mutated bytes.
    """

    name: str
    mutator: str
    data: bytes


def _mutate_dicom(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    split = split_deflated(data)
    if split is not None and rng.random() < 0.7:
        meta, inner = split
        # the inflated body is explicit VR little endian without meta
        elements: list[Element] = []
        _walk(inner, 0, len(inner), True, False, 0, elements)
        name, mutated = _apply_dicom(inner, rng, elements)
        return "inner:" + name, meta + _deflate(mutated)
    elements, _, _ = dicom_elements(data)
    return _apply_dicom(data, rng, elements)


def _apply_dicom(data: bytes, rng: random.Random, elements: list[Element]) -> tuple[str, bytes]:
    name = rng.choice(DICOM_MUTATORS)
    if name in BYTE_MUTATORS:
        return name, BYTE_MUTATORS[name](data, rng)
    return name, _DICOM_STRUCT[name](data, rng, elements)


def _mutate_nifti(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    if data[:2] == b"\x1f\x8b":
        if rng.random() < 0.75:
            try:
                inner = gzip.decompress(data)
            except (OSError, EOFError, zlib.error):
                inner = None
            if inner is not None:
                name, mutated = _mutate_nifti(inner, rng)
                return "inner:" + name, _gzip(mutated)
        name = rng.choice(list(BYTE_MUTATORS))
        return name, BYTE_MUTATORS[name](data, rng)
    name = rng.choice(NIFTI_MUTATORS)
    if name == "nifti_field":
        return name, _nifti_field(data, rng)
    if name == "nifti_multi":
        return name, _nifti_multi(data, rng)
    return name, BYTE_MUTATORS[name](data, rng)


def mutate(data: bytes, fmt: str, *, seed_name: str, index: int, base_seed: int = 0) -> Mutation:
    """Return mutation number ``index`` of a seed, deterministically.

    Parameters
    ----------
    data : bytes
        The seed's bytes.
    fmt : {"dicom", "nifti"}
        Which structure-aware mutators apply (``.nii.gz`` is "nifti").
    seed_name : str
        The seed's stable name (part of the random seed and of the result's name).
    index : int
        Mutation number.
    base_seed : int
        Campaign seed; change it to explore other mutations.

    Returns
    -------
    Mutation
        Name, mutator and bytes. Mutators that produce the seed unchanged are
        retried with a bit flip, so every mutation differs from its seed.
    """
    if fmt not in ("dicom", "nifti"):
        raise ValueError(f"fmt must be 'dicom' or 'nifti', not {fmt!r}")
    rng = rng_for(base_seed, seed_name, index)
    if fmt == "dicom":
        name, out = _mutate_dicom(data, rng)
        if rng.random() < 0.25:  # stack a second mutation now and then
            name2, out = _mutate_dicom(out, rng)
            name = f"{name}+{name2}"
    else:
        name, out = _mutate_nifti(data, rng)
    if out == data:
        name, out = name + "+bitflip", _bitflip(data, rng)
    return Mutation(f"{seed_name}#{index}", name, out)


def mutations(data: bytes, fmt: str, *, seed_name: str, count: int, base_seed: int = 0,
              start: int = 0) -> Iterator[Mutation]:
    """Yield ``count`` deterministic mutations of one seed (see :func:`mutate`)."""
    for i in range(start, start + count):
        yield mutate(data, fmt, seed_name=seed_name, index=i, base_seed=base_seed)
