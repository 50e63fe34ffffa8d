"""Decode a JPEG 2000 series with SimpleITK (GDCM) in threads, with the same values as pydicom.

The openjpeg binding pydicom uses holds the GIL while it decodes, so a series decoded
by it needs worker processes (:func:`medmulti.io.pixels.decode_series_parallel`), and
a script without an ``if __name__ == "__main__":`` guard cannot have them. GDCM's
OpenJPEG, reached through ``SimpleITK.ImageFileReader``, releases the GIL while it
reads and decodes a file: threads decode slices in parallel, in any script, with no
process start-up and no copy between processes.

GDCM is not the oracle: a slice's stored values are defined as pydicom's decode
(:func:`medmulti.io.pixels.read_stored`), and the output as our modality LUT
(:func:`medmulti.io.values.apply_rescale_into`) applied to them. A slice goes through
SimpleITK only where the result is then the same, bit for bit:

* the header: a common single-frame SOP class (CT, MR, PET, NM, secondary capture,
  CR, DX, MG: GDCM takes their rescale from the top level), single frame, one sample,
  MONOCHROME2 (GDCM inverts MONOCHROME1), 8 or 16 bits allocated, a plain
  RescaleSlope / RescaleIntercept (one finite number each, slope not 0), and a file
  on disk;
* the codestream (read from the file): a bare J2K codestream (SOC, then SIZ) of
  Rows x Columns, one component of BitsStored precision and PixelRepresentation's
  signedness (so neither decoder corrects bits or signs), unsubsampled, whose every
  COD / COC (main and tile-part headers) uses the reversible 5-3 wavelet: integer
  arithmetic, so a valid codestream decodes to the same values in any conforming
  decoder (the 9-7 wavelet is floating point: those series stay with pydicom);
* GDCM's output: the expected size and one component. GDCM applies the rescale
  itself (ITK forces it for every SOP class), exactly: integer slope and intercept
  give integers, others ``float64``. The stored values are recovered from it, and
  checked: every value must map back to an integer stored value within BitsStored's
  range, and, for ``float64``, map forward again to exactly GDCM's value.

Every other slice, and any slice SimpleITK fails on, is decoded by pydicom as before,
in the same thread: its values, and its typed errors (a corrupt frame is a
:class:`~medmulti.errors.CorruptFileError` naming the file), are those of the
in-process path. SimpleITK's own exception text (GDCM messages, paths) never leaves
this module. As a last check the first slice is decoded both ways; should they
differ, the whole series is decoded by the previous path. (Damaged codestreams tried
in the tests fail in both decoders, or, with damaged tile data, decode to the same
values in both.)

Threads need no ``if __name__ == "__main__":`` guard and start no process. Each
slice costs about 2 ms more CPU than pydicom's decode (GDCM parses the file three
times), so on a machine with no idle core the process pool can be a little faster;
``benchmarks/RESULTS.md`` has the measurements.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .dicom_bytes import fast_get
from .dicom_header import DicomHeader
from .pixels import read_stored
from .quiet import quiet_pydicom
from .safe_files import open_regular
from .values import apply_rescale_into

__all__ = ["THREAD_SYNTAXES", "decode_series_threads", "decode_slice_itk", "file_eligible", "header_eligible",
           "codestream_eligible"]

logger = logging.getLogger("medmulti.io")

#: JPEG 2000 (lossless only, and "lossy" that may hold a reversible codestream).
#: HTJ2K stays with pydicom.
THREAD_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})

#: SOP classes whose modality LUT GDCM takes from the top-level RescaleSlope and
#: RescaleIntercept (ITK forces that for every class but the enhanced family, which
#: GDCM reads from functional groups): CT, MR, PET, NM, secondary capture, CR, DX, MG.
_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.128",
    "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
})
#: Tile-parts walked at most before a codestream counts as unusual (pydicom decodes it).
_MAX_TILE_PARTS = 64
#: Up to this magnitude every integer is a float32: the modality LUT of a recovered
#: stored value then equals GDCM's integer output cast to float32.
_F32_EXACT = 2**24


def _plain_number(ds: Any, keyword: str) -> bool:
    """Whether the attribute is absent or one finite number (as GDCM and we both read it alike)."""
    value = fast_get(ds, keyword)
    if value is None or value == "":
        return True
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
        return False
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def header_eligible(h: DicomHeader) -> bool:
    """Whether the header allows a SimpleITK decode with pydicom's values (see the module notes).

    Parameters
    ----------
    h : DicomHeader
        A checked header.

    Returns
    -------
    bool
        False sends the file to pydicom.
    """
    if h.buffer is not None or h.transfer_syntax not in THREAD_SYNTAXES:
        return False
    if h.frames != 1 or h.samples != 1 or h.photometric != "MONOCHROME2" or h.bits_allocated not in (8, 16):
        return False
    if not 1 <= h.bits_stored <= h.bits_allocated or h.rows < 1 or h.columns < 1:
        return False
    sop = [str(fast_get(src, kw) or "").strip() for src, kw in
           ((h.ds, "SOPClassUID"), (getattr(h.ds, "file_meta", None), "MediaStorageSOPClassUID")) if src is not None]
    if not any(sop) or not all(uid in _SOP_CLASSES for uid in sop if uid):
        return False
    if not (_plain_number(h.ds, "RescaleSlope") and _plain_number(h.ds, "RescaleIntercept")):
        return False
    slope = fast_get(h.ds, "RescaleSlope")
    return slope in (None, "") or float(slope) != 0.0


def _fragments(f: Any, offset: int) -> bytes | None:
    """The frame's codestream (the fragments after the Basic Offset Table), or None if malformed."""
    size = f.seek(0, 2)
    pos, parts, first = offset, [], True
    while True:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return None
        group, elem, length = struct.unpack("<HHI", head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        if (group, elem) != (0xFFFE, 0xE000) or pos + 8 + length > size:
            return None
        if not first:
            parts.append(f.read(length))
        first = False
        pos += 8 + length
    return b"".join(parts) if parts else None


def _transform_ok(cs: bytes, pos: int, marker: int, csiz: int) -> bool:
    """COD / COC at ``pos``: the reversible 5-3 wavelet (transformation 1)."""
    at = pos + 13 if marker == 0xFF52 else pos + 4 + (1 if csiz < 257 else 2) + 1 + 4
    return at < len(cs) and cs[at] == 1


def codestream_eligible(cs: bytes, h: DicomHeader) -> bool:
    """Whether a J2K codestream matches the header and decodes with integer arithmetic only.

    Parameters
    ----------
    cs : bytes
        The frame's codestream.
    h : DicomHeader
        Its header.

    Returns
    -------
    bool
        True for SOC + SIZ of Rows x Columns, one unsubsampled component whose
        precision is BitsStored and signedness PixelRepresentation's, and every
        COD / COC (main header and tile-part headers) with the reversible wavelet.

    Notes
    -----
    ISO/IEC 15444-1 Annex A: marker segments, SIZ (A.5.1), COD (A.6.1), COC (A.6.2),
    SOT (A.4.2).
    """
    if len(cs) < 2 + 2 + 38 + 3 or cs[:4] != b"\xff\x4f\xff\x51":
        return False
    lsiz, _rsiz, xsiz, ysiz, xo, yo = struct.unpack_from(">HHIIII", cs, 4)
    (csiz,) = struct.unpack_from(">H", cs, 4 + 36)
    if csiz != 1 or lsiz != 38 + 3 * csiz or xsiz - xo != h.columns or ysiz - yo != h.rows:
        return False
    ssiz, xr, yr = cs[4 + 38], cs[4 + 39], cs[4 + 40]
    if (ssiz & 0x7F) + 1 != h.bits_stored or bool(ssiz & 0x80) != h.signed or (xr, yr) != (1, 1):
        return False
    pos, cod, n = 4 + lsiz, False, len(cs)
    while True:  # the main header, up to the first SOT
        if pos + 4 > n or cs[pos] != 0xFF:
            return False
        (marker, length) = struct.unpack_from(">HH", cs, pos)
        if marker == 0xFF90:
            break
        if marker in (0xFF52, 0xFF53):
            if not _transform_ok(cs, pos, marker, csiz):
                return False
            cod |= marker == 0xFF52
        pos += 2 + length
    if not cod:
        return False
    for _ in range(_MAX_TILE_PARTS):  # every tile-part header, SOT to SOD
        if pos + 12 > n or struct.unpack_from(">HH", cs, pos) != (0xFF90, 10):
            return False
        (psot,) = struct.unpack_from(">I", cs, pos + 6)
        at = pos + 12
        while True:
            if at + 2 > n or cs[at] != 0xFF:
                return False
            (marker,) = struct.unpack_from(">H", cs, at)
            if marker == 0xFF93:
                break
            if at + 4 > n:
                return False
            if marker in (0xFF52, 0xFF53) and not _transform_ok(cs, at, marker, csiz):
                return False
            at += 2 + struct.unpack_from(">H", cs, at + 2)[0]
        if psot == 0:
            return True  # the last tile-part: it runs to EOC
        pos += psot
        if pos + 2 <= n and cs[pos:pos + 2] == b"\xff\xd9":
            return True
    return False


def _read_itk(path: str) -> Any:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    return reader.Execute()  # releases the GIL while GDCM reads and decodes


def file_eligible(h: DicomHeader) -> bool:
    """Whether SimpleITK may decode this file here: header and codestream (see the module notes).

    Parameters
    ----------
    h : DicomHeader
        A checked header of a single-frame file.

    Returns
    -------
    bool
        False when the header or the codestream is not one whose SimpleITK decode
        is known to give pydicom's values, or the codestream cannot be read.
    """
    if not header_eligible(h) or h.pixel_offset is None:
        return False
    try:
        with open_regular(h.path, name=h.name) as f:
            cs = _fragments(f, h.pixel_offset)
    except Exception:
        return False
    return cs is not None and codestream_eligible(cs, h)


def decode_slice_itk(h: DicomHeader, out: np.ndarray, slope: float, intercept: float, *,
                     checked: bool = False) -> bool:
    """Decode one single-frame JPEG 2000 file with SimpleITK into ``out``, if the values are pydicom's.

    Parameters
    ----------
    h : DicomHeader
        A checked header of a single-frame file.
    out : numpy.ndarray
        float32 ``(rows, columns)`` destination.
    slope, intercept : float
        The slice's modality LUT, as :meth:`DicomHeader.rescale` gives it.
    checked : bool
        :func:`file_eligible` already said yes for ``h``.

    Returns
    -------
    bool
        True when ``out`` holds ``apply_rescale_into(stored, out, slope, intercept)``
        of the stored values pydicom would decode; False (``out`` unspecified) when
        the file is not one SimpleITK may decode here, or SimpleITK failed on it:
        decode it with pydicom then, which also raises the typed errors.
    """
    if not (checked or file_eligible(h)):
        return False
    try:
        import SimpleITK as sitk

        img = _read_itk(str(h.path))
        if img.GetNumberOfComponentsPerPixel() != 1 or tuple(img.GetSize())[:2] != (h.columns, h.rows) \
                or img.GetNumberOfPixels() != h.rows * h.columns:
            return False
        values = sitk.GetArrayViewFromImage(img).reshape(h.rows, h.columns)
        return _from_rescaled(values, h, out, slope, intercept)
    except Exception:  # SimpleITK's RuntimeError (GDCM's text, the path): pydicom decides
        return False


def _from_rescaled(v: np.ndarray, h: DicomHeader, out: np.ndarray, slope: float, intercept: float) -> bool:
    """Write our modality LUT of the stored values behind GDCM's rescaled ``v`` into ``out``."""
    bs = h.bits_stored
    lo, hi = (-(2 ** (bs - 1)), 2 ** (bs - 1) - 1) if h.signed else (0, 2**bs - 1)
    stored_dtype = h.stored_dtype().newbyteorder("=")
    if v.dtype.kind in "iu":
        if not (float(slope).is_integer() and float(intercept).is_integer()):
            return False
        m, b = int(slope), int(intercept)
        vmin, vmax = int(v.min()), int(v.max())
        exact = max(-lo, hi) * abs(m) + abs(b) < _F32_EXACT
        if m == 1:
            if vmin - b < lo or vmax - b > hi:
                return False
            if exact:  # float32(s) + float32(b) is exact, so it is float32(v)
                np.copyto(out, v, casting="unsafe")
                return True
            stored = (v.astype(np.int64) - b).astype(stored_dtype)
        else:
            w = v.astype(np.int64) - b
            if np.any(w % m):
                return False
            w //= m
            if int(w.min()) < lo or int(w.max()) > hi:
                return False
            if exact:  # float32(s) * float32(m) + float32(b): every step exact
                np.copyto(out, v, casting="unsafe")
                return True
            stored = w.astype(stored_dtype)
    elif v.dtype == np.float64:
        mf, bf = float(slope), float(intercept)
        if abs(mf) <= 4 * np.finfo(np.float64).eps * (max(-lo, hi) * abs(mf) + abs(bf)):
            return False  # neighbouring stored values could round to one output value
        s = np.rint((v - bf) / mf)
        if not np.array_equal(s * mf + bf, v) or float(s.min()) < lo or float(s.max()) > hi:
            return False  # GDCM computes slope * stored + intercept in double: it must come back exactly
        stored = s.astype(stored_dtype)
    else:
        return False
    apply_rescale_into(stored, out, slope, intercept)
    return True


def decode_series_threads(hs: Sequence[DicomHeader], rescales: Sequence[tuple[float, float]],
                          threads: int) -> np.ndarray | None:
    """Decode a JPEG 2000 series of single-frame files in threads into one float32 volume.

    Parameters
    ----------
    hs : sequence of DicomHeader
        Checked headers of single-frame files, in slice order, all of one size.
    rescales : sequence of (float, float)
        Each slice's (RescaleSlope, RescaleIntercept).
    threads : int
        Threads decoding at once (SimpleITK releases the GIL).

    Returns
    -------
    numpy.ndarray or None
        float32 ``(slices, rows, columns)``, each slice's modality LUT applied, the
        same values as the in-process path; None when the first slice is not one
        SimpleITK may decode, or its SimpleITK decode differs from pydicom's: the
        caller decodes the series the previous way.

    Raises
    ------
    MedmultiError
        A slice that does not decode (typed, naming its file), from pydicom's
        decode of it: the first such slice in slice order.
    """
    n = len(hs)
    if n == 0 or not file_eligible(hs[0]):
        return None
    try:
        import SimpleITK  # noqa: F401  - here, not once per thread
    except ImportError:  # pragma: no cover - a dependency; pydicom decodes without it
        return None
    first = hs[0]
    vol = np.empty((n, first.rows, first.columns), np.float32)

    @quiet_pydicom
    def decode(k: int) -> bool:
        slope, intercept = rescales[k]
        if decode_slice_itk(hs[k], vol[k], slope, intercept, checked=k == 0):
            return True
        stored = read_stored(hs[k])
        apply_rescale_into(stored[0], vol[k], slope, intercept)
        return False

    futures: list[Future[bool]] = []
    with ThreadPoolExecutor(max(1, min(int(threads), n)), thread_name_prefix="medmulti-j2k") as pool:
        try:
            futures = [pool.submit(decode, k) for k in range(n)]
            reference = np.empty(vol.shape[1:], np.float32)  # the first slice by pydicom, meanwhile
            apply_rescale_into(read_stored(first)[0], reference, *rescales[0])
            if not futures[0].result():
                logger.debug("SimpleITK did not decode the first slice; the series is decoded with pydicom")
                return None
            if not np.array_equal(vol[0], reference):
                logger.warning("SimpleITK's JPEG 2000 decode differs from pydicom's; decoding with pydicom")
                return None
            for fut in futures:
                fut.result()
        finally:
            for fut in futures:
                fut.cancel()
    return vol
