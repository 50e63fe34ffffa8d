"""The DICOM byte layer: what medmulti reads from a file's bytes itself.

pydicom parses every dataset; this module does the byte-level work around it
that pydicom alone does not do, or does too slowly for a series of thousands of
files:

- a strict file wrapper (:class:`_StrictReader`): pydicom only *warns* when a
  header is cut short, and a truncated file must be reported as corrupt;
- a fast path through the file meta group (:func:`_scan_meta`) and raw-byte
  conversion of the attributes read for every file (:func:`fast_get`):
  pydicom's ``FileDataset`` construction and generic value conversion
  (~20-50 us per attribute) dominated series reading;
- bounded inflation of deflated datasets (:func:`_inflate`): pydicom inflates
  without a cap, so a deflate bomb would exhaust memory;
- locating PixelData and walking what follows it by element and item headers
  (:func:`locate_pixel_data`, :func:`check_fragments`, :func:`check_trailing`,
  :func:`codestream_dims`): a file cut inside or after its pixel data, an
  encapsulated item running past the end, or a codestream whose own size
  disagrees with Rows/Columns is caught before any decoder allocates.

Values read here come from the header and may identify the patient: they are
used for computation, never put into messages.

Notes
-----
PS3.5 7.1 (data elements), 7.5 (nesting), A.4 (encapsulation: items and the
Sequence Delimitation Item), PS3.10 7.1 (file meta information).
``tests/io/test_dicom_bytes_differential.py`` checks :func:`fast_get` against
pydicom's public API on every file pydicom ships as test data.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from typing import Any

from ..errors import CorruptFileError, ResourceLimitError, UnsupportedDataError
from .limits import Limits

__all__ = [
    "FAST_KEYWORDS",
    "fast_get",
    "codestream_dims",
    "parse_dataset",
    "locate_pixel_data",
    "check_fragments",
    "check_trailing",
    "select_elements",
    "file_meta_of",
]

_PIXEL_TAG = 0x7FE00010
_OTHER_PIXEL_TAGS = {0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}  # deflated explicit LE (+ image frame)
_DEFLATED_BYTES = tuple(uid.encode() for uid in _DEFLATED)
_IMPLICIT_LE = "1.2.840.10008.1.2"

# Attributes read for every file of a series: converted straight from the raw
# element bytes (pydicom's generic conversion costs ~20-50 us per attribute,
# which dominated series reading). Anything unexpected falls back to pydicom.
_FAST = {
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "SamplesPerPixel": (0x00280002, "US"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "NumberOfFrames": (0x00280008, "IS"),
    "SeriesNumber": (0x00200011, "IS"),
    "Modality": (0x00080060, "CS"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "MediaStorageSOPClassUID": (0x00020002, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "PixelSpacing": (0x00280030, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "SpacingBetweenSlices": (0x00180088, "DS"),
    # what a scan of an export groups and chooses by (medmulti.scanning); identifying
    # values among them (PatientID, PatientName, AccessionNumber, dates) are used
    # for grouping and keys only, never shown
    "PatientID": (0x00100020, "LO"),
    "PatientName": (0x00100010, "PN"),
    "AccessionNumber": (0x00080050, "SH"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "StudyDate": (0x00080020, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "ImageType": (0x00080008, "CS"),
    "SeriesDescription": (0x0008103E, "LO"),
    "ProtocolName": (0x00181030, "LO"),
    "SequenceName": (0x00180024, "SH"),
    "MRAcquisitionType": (0x00180023, "CS"),
    "ViewPosition": (0x00185101, "CS"),
    "SliceThickness": (0x00180050, "DS"),
}
# Text VRs whose values may repeat (backslash-separated, PS3.5 6.4); UIs are kept whole.
_MULTI_VALUED = frozenset({"DS", "IS", "CS", "LO", "SH", "PN", "DA", "TM"})
#: Keywords :func:`fast_get` converts from raw bytes (others go to ``ds.get``).
FAST_KEYWORDS = frozenset(_FAST)
_MISSING = object()


def fast_get(ds: Any, keyword: str) -> Any:
    """Value of a common attribute from its raw bytes (pydicom's conversion otherwise).

    Parameters
    ----------
    ds : pydicom.Dataset
    keyword : str
        One of the keywords in ``_FAST`` (others go to ``ds.get``).

    Returns
    -------
    int, str, list of str or None
        US as int; text VRs (CS, UI, LO, SH, PN, DA, TM) as stripped text; IS/DS
        as text (callers convert); a list of texts when a value other than a UI
        is multi-valued; None when absent. Text holding non-ASCII bytes comes
        from pydicom, decoded with the dataset's SpecificCharacterSet.
    """
    spec = _FAST.get(keyword)
    store = getattr(ds, "_dict", None)
    if spec is None or store is None:
        return ds.get(keyword, None)
    tag, vr = spec
    elem = store.get(tag, _MISSING)
    if elem is _MISSING:
        return None
    raw = getattr(elem, "is_raw", False)
    if not raw or (elem.VR is not None and elem.VR != vr) or elem.value is None:
        return ds.get(keyword, None)
    data = elem.value
    if vr == "US":
        if len(data) != 2:
            return ds.get(keyword, None)
        return struct.unpack("<H" if elem.is_little_endian else ">H", data)[0]
    if not data.isascii():  # the dataset's SpecificCharacterSet decides (pydicom decodes it)
        return ds.get(keyword, None)
    text = data.decode("ascii").strip(" \x00")
    if vr in _MULTI_VALUED and "\\" in text:
        return [t.strip() for t in text.split("\\")]
    return text



class _StrictReader:
    """File wrapper that records reads cut short by the end of the file."""

    def __init__(self, raw, name: str) -> None:
        self._raw = raw
        self.name = name
        self.truncated = False

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if n is not None and n > 0 and len(data) < n and not (n == 8 and len(data) == 0):
            self.truncated = True
        return data

    def seek(self, *args):
        return self._raw.seek(*args)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:  # pydicom must not close our file
        pass


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def codestream_dims(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) declared inside a JPEG / JPEG-LS / JPEG 2000 codestream.

    Reads the SIZ marker (JPEG 2000, ISO/IEC 15444-1 A.5.1), the ``ihdr`` box of a
    JP2 file, or the SOF marker (JPEG / JPEG-LS). Checked against Rows/Columns
    before decoding, so a header whose sizes were changed cannot make a decoder
    allocate an image of another size. None when not recognised (RLE, other).

    Parameters
    ----------
    data : bytes
        The first bytes of the first fragment.

    Returns
    -------
    (int, int) or None
    """
    if data[:4] == b"\xff\x4f\xff\x51" and len(data) >= 24:  # SOC + SIZ
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[8:24])
        return (ysiz - yo, xsiz - xo)
    if data[4:8] == b"jP  ":
        i = data.find(b"ihdr")
        if i >= 0 and len(data) >= i + 12:
            h, w = struct.unpack(">II", data[i + 4 : i + 12])
            return (h, w)
        return None
    if data[:2] == b"\xff\xd8":  # JPEG SOI: walk the marker segments to the SOF
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            seg = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
            if marker in _SOF_MARKERS:
                if pos + 9 > len(data):
                    return None
                y, x = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return (y, x) if y else None  # Y may be 0 (set by a later DNL marker)
            pos += 2 + seg
    return None


def _inflate(fp, path_name: str, limits: Limits) -> bytes:
    """Inflate a deflated dataset in bounded steps (a deflate bomb stops at the cap)."""
    try:  # ISA-L when installed (about 2.3x faster), else zlib
        from isal import isal_zlib

        d = isal_zlib.decompressobj(wbits=-15)
    except ImportError:  # pragma: no cover - isal is a dependency
        d = zlib.decompressobj(-zlib.MAX_WBITS)
    chunks, total = [], 0
    step = 1 << 20
    while not d.eof:
        data = d.unconsumed_tail or fp.read(1 << 16)
        if not data:
            break
        out = d.decompress(data, step)
        total += len(out)
        if total > limits.max_bytes:
            raise ResourceLimitError(
                f"the deflated dataset inflates beyond the {limits.max_bytes:,}-byte cap",
                path=path_name,
                keyword="TransferSyntaxUID",
            )
        chunks.append(out)
    return b"".join(chunks)


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_KNOWN_TS = {
    "1.2.840.10008.1.2": (True, True),
    "1.2.840.10008.1.2.2": (False, False),
}


def _scan_meta(head: bytes) -> tuple[int, str, str] | None:
    """Locate the file meta group (explicit VR little endian) in the first bytes.

    Returns ``(end offset, TransferSyntaxUID, MediaStorageSOPClassUID)``, or None
    when the group is not entirely inside ``head`` or looks unusual (pydicom then
    parses the file the ordinary way).
    """
    pos, ts, sop = 132, "", ""
    while pos + 8 <= len(head):
        group, elem = struct.unpack("<HH", head[pos : pos + 4])
        if group != 0x0002:
            return (pos, ts, sop) if ts else None
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            length = struct.unpack("<I", head[pos + 8 : pos + 12])[0]
            start = pos + 12
        elif vr.isalpha() and vr.isupper():
            length = struct.unpack("<H", head[pos + 6 : pos + 8])[0]
            start = pos + 8
        else:
            return None
        if length == 0xFFFFFFFF or start + length > len(head):
            return None
        if elem == 0x0010:
            ts = head[start : start + length].decode("ascii", "replace").strip(" \x00")
        elif elem == 0x0002:
            sop = head[start : start + length].decode("ascii", "replace").strip(" \x00")
        pos = start + length
    return None


_EXPLICIT_LE = frozenset({"1.2.840.10008.1.2.1"})  # and every encapsulated syntax (not implicit, big endian, deflated)
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_FUNCTIONAL_GROUPS = (0x52009229, 0x52009230)  # Shared/PerFrameFunctionalGroupsSequence: enhanced objects
_CHUNK = 1 << 16
_HH, _UL, _US = struct.Struct("<HH"), struct.Struct("<I"), struct.Struct("<H")
_ELEMENT = struct.Struct("<HH2sH")  # an explicit VR element header: group, element, VR, 16-bit length
# VRs with a 16-bit length: any two upper-case letters but the long ones (an unknown VR
# is taken as short, as before; pydicom decides what it means)
_SHORT_VRS = frozenset(bytes((a, b)) for a in range(65, 91) for b in range(65, 91)) - _LONG_VRS
_FIRST_RARE_TAG = min(_FUNCTIONAL_GROUPS)  # every tag the walk stops at is at least this (or in group 0002)


class _Buffer:
    """Forward reads of a file through one sliding window (a walk moves forward only).

    Invariant: the file is positioned at ``base + len(data)``.
    """

    def __init__(self, f, start: int, end: int) -> None:
        self.f, self.base, self.end = f, start, end
        f.seek(start)
        self.data = f.read(min(_CHUNK, end - start))

    def view(self, pos: int, n: int) -> bytes | None:
        """``n`` bytes at file offset ``pos`` (None past the end of the file)."""
        if pos + n > self.end or pos < self.base:
            return None
        i = pos - self.base
        if i + n > len(self.data):
            if i >= len(self.data):  # a skipped value: jump to it
                self.f.seek(pos)
                self.data = self.f.read(max(n, _CHUNK))
            else:  # keep the tail, read on
                self.data = self.data[i:] + self.f.read(max(n, _CHUNK))
            self.base, i = pos, 0
            if n > len(self.data):
                return None
        return self.data[i : i + n]


@functools.lru_cache(maxsize=64)
def file_meta_of(transfer_syntax: str, sop_class: str = "") -> Any:
    """A file meta dataset holding TransferSyntaxUID (and MediaStorageSOPClassUID) as raw elements.

    Raw, as pydicom leaves every element it reads: converted (and validated) only
    when used; setting them as attributes validated each UID (~10% of a header read).
    One dataset per pair of UIDs is built and shared by every header that has them
    (the files of a series: building it took ~15 us per file): read it, never change it.

    Parameters
    ----------
    transfer_syntax : str
    sop_class : str
        Empty: not set.

    Returns
    -------
    pydicom.dataset.FileMetaDataset
    """
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import FileMetaDataset
    from pydicom.tag import Tag

    fm = FileMetaDataset()
    for tag, uid in ((0x00020010, transfer_syntax), (0x00020002, sop_class)):
        if uid:
            value = uid.encode("ascii", "replace")
            value += b"\x00" * (len(value) % 2)
            fm[tag] = RawDataElement(Tag(tag), "UI", len(value), value, 0, False, True)
    return fm


def select_elements(f, head: bytes, file_size: int, wanted: frozenset[int], *, max_depth: int = 32
                    ) -> tuple[dict[int, tuple[str, int, bytes]], str, str, int, int | None] | None:
    """Walk a dataset by its element headers up to PixelData, keeping only the wanted values.

    The fast path of :func:`medmulti.io.dicom_header.read_header` ``only=``: pydicom
    builds an element for every attribute of a header (about 8 us each); a scan of an
    export needs some twenty of them. Only explicit VR little endian datasets are walked
    (every native and encapsulated transfer syntax but implicit VR, big endian and
    deflated); sequences are skipped by their length, or item by item when their length
    is undefined (PS3.5 7.5), nested at most ``max_depth`` levels.

    Parameters
    ----------
    f : binary file object
        The file, seekable.
    head : bytes
        Its first bytes (preamble, ``DICM`` and the whole file meta group; 2 kB in practice).
    file_size : int
        Bytes in the file.
    wanted : frozenset of int
        Tags (``group << 16 | element``) of top-level attributes to keep.
    max_depth : int
        Deepest sequence nesting walked.

    Returns
    -------
    (found, transfer_syntax, sop_class, pixel_offset, pixel_length) or None
        ``found`` maps each wanted tag present to ``(VR, value offset, value bytes)``
        (a sequence of undefined length: its items, without the delimiter);
        TransferSyntaxUID and MediaStorageSOPClassUID of the file meta group; the
        offset and declared length of PixelData's value (length None when
        encapsulated). None whenever the walk cannot vouch for the file: no preamble
        or an unusual meta group, another encoding, an enhanced multi-frame object
        (functional groups), float pixel
        data, no PixelData before the end of the file, an element or item running
        past the end, an unknown VR, nesting too deep. The caller then parses the
        file with pydicom, whose verdict (corrupt, unsupported...) stands.
    """
    meta = _scan_meta(head) if head[128:132] == b"DICM" else None
    if meta is None:
        return None
    start, transfer_syntax, sop = meta
    if transfer_syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2") or transfer_syntax in _DEFLATED:
        return None
    buf = _Buffer(f, start, file_size)
    found: dict[int, tuple[str, int, bytes]] = {}
    pos = start
    # hot loop (a real scanner header holds hundreds of elements): one unpack per
    # element header, VR classes looked up in sets, the rare tags behind one comparison
    element, ul = _ELEMENT.unpack_from, _UL.unpack_from
    long_vrs, short_vrs = _LONG_VRS, _SHORT_VRS
    data, base = buf.data, buf.base
    limit = len(data) - 12
    while True:
        i = pos - base
        if i < 0 or i > limit:  # near the end of the window: slide it (or the file ends)
            if buf.view(pos, 8) is None:
                return None  # no PixelData: a non-image object or a cut header; pydicom decides
            buf.view(pos, min(12, file_size - pos))
            data, base = buf.data, buf.base
            limit = len(data) - 12
            i = pos - base
        group, elem, vr, length = element(data, i)
        if vr in short_vrs:
            value = pos + 8
        elif vr in long_vrs:
            if i > limit:
                return None
            length = ul(data, i + 8)[0]
            value = pos + 12
        else:
            return None
        tag = group << 16 | elem
        if tag >= _FIRST_RARE_TAG or group == 0x0002:
            if tag == _PIXEL_TAG:
                return found, transfer_syntax, sop, value, None if length == 0xFFFFFFFF else length
            if tag in _OTHER_PIXEL_TAGS or tag in _FUNCTIONAL_GROUPS or group == 0x0002 or tag > _PIXEL_TAG:
                return None
        if length == 0xFFFFFFFF:
            if vr != b"SQ":
                return None
            end = _skip_items(buf, value, max_depth)
            if end is None:
                return None
            if tag in wanted:  # its items, without the Sequence Delimitation Item (pydicom reads them)
                got = buf.view(value, end - 8 - value)
                if got is None:
                    return None
                found[tag] = ("SQ", value, got)
            pos = end
            data, base = buf.data, buf.base
            limit = len(data) - 12
            continue
        pos = value + length
        if pos > file_size:
            return None
        if tag in wanted:
            got = buf.view(value, length)
            if got is None:
                return None
            found[tag] = (vr.decode("ascii"), value, got)
            data, base = buf.data, buf.base
            limit = len(data) - 12


def _skip_items(buf: _Buffer, pos: int, depth: int) -> int | None:
    """Offset after an undefined-length sequence's delimiter; None when malformed or too deep."""
    if depth <= 0:
        return None
    unpack = struct.unpack
    while True:
        head = buf.view(pos, 8)
        if head is None:
            return None
        group, elem, length = unpack("<HHI", head)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            return None
        if length != 0xFFFFFFFF:
            pos += length
            continue
        while True:  # an undefined-length item: its elements up to the item delimiter
            head = buf.view(pos, 8)
            if head is None:
                return None
            group, elem = unpack("<HH", head[:4])
            if (group << 16 | elem) == _ITEM_END:
                pos += 8
                break
            vr = head[4:6]
            if vr in _LONG_VRS:
                more = buf.view(pos + 8, 4)
                if more is None:
                    return None
                length = unpack("<I", more)[0]
                value = pos + 12
            elif 65 <= vr[0] <= 90 and 65 <= vr[1] <= 90:
                length = unpack("<H", head[6:8])[0]
                value = pos + 8
            else:
                return None
            if length == 0xFFFFFFFF:
                if vr != b"SQ":
                    return None
                end = _skip_items(buf, value, depth - 1)
                if end is None:
                    return None
                pos = end
            else:
                pos = value + length
            if pos > buf.end:
                return None


def _at_pixels(tag, vr, length) -> bool:
    # int() first: pydicom's BaseTag compares in Python, int compares in C
    return 0x7FE00008 <= int(tag) <= 0x7FE00010


def parse_dataset(fp, path_name: str, *, force: bool, limits: Limits, head: bytes, strict: bool):
    """Parse a file's dataset up to (not including) its pixel data.

    Parameters
    ----------
    fp : binary file object
        The file, seekable, positioned anywhere (it is seeked).
    path_name : str
        Name used in messages.
    force : bool
        Parse a raw dataset without preamble and ``DICM`` marker.
    limits : Limits
        Caps (``max_bytes`` bounds an inflated deflated dataset).
    head : bytes
        The file's first bytes (at least the preamble and the meta group when
        they are there; 2 kB is enough in practice).
    strict : bool
        Parse through :class:`_StrictReader` so that a read cut short by the
        end of the file is recorded in its ``truncated`` attribute (and the
        fast path is not taken).

    Returns
    -------
    (pydicom.Dataset, file object, bytes or None, str)
        The dataset (its ``file_meta`` holds TransferSyntaxUID, and
        MediaStorageSOPClassUID when present); the file object positioned just
        after the last element parsed (the strict wrapper, or the inflated bytes
        of a deflated dataset); those inflated bytes (None unless deflated);
        the transfer syntax UID (guessed from the encoding for a raw dataset).

    Raises
    ------
    ResourceLimitError
        A deflated dataset inflating beyond ``limits.max_bytes``.
    Exception
        Anything pydicom raises on a damaged file: the caller wraps it.
    """
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    reader = _StrictReader(fp, path_name) if strict else fp
    if not strict and not force and head[128:132] == b"DICM":
        # fast path: meta group scanned here, the dataset parsed by pydicom's
        # read_dataset (skips FileDataset/FileMetaDataset construction, ~40% of dcmread)
        meta = _scan_meta(head)
        if meta is not None and meta[1] not in _DEFLATED:
            end, ts, sop = meta
            implicit, little = _KNOWN_TS.get(ts, (False, True))
            fp.seek(end)
            ds = read_dataset(fp, implicit, little, stop_when=_at_pixels)
            ds.file_meta = file_meta_of(ts, sop)
            return ds, fp, None, ts
    if any(uid in head for uid in _DEFLATED_BYTES):
        preamble = read_preamble(reader, force)
        meta = _read_file_meta_info(reader) if preamble is not None or force else None
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if ts in _DEFLATED:
            inflated = _inflate(fp, path_name, limits)
            sub = _StrictReader(io.BytesIO(inflated), path_name)
            ds = pydicom.dcmread(sub, force=True, stop_before_pixels=True)
            ds.file_meta = meta
            return ds, sub, inflated, ts
        reader.seek(0)
    ds = pydicom.dcmread(reader, force=force, stop_before_pixels=True)
    tsu = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsu:
        ts = str(tsu)
    else:  # raw dataset: pydicom guessed the encoding
        implicit, little = getattr(ds, "original_encoding", (True, True))
        ts = "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
    return ds, reader, None, ts


def locate_pixel_data(
    f, pos: int, total: int, *, transfer_syntax: str, little_endian: bool, name: str
) -> tuple[int | None, int | None]:
    """Read the element header at ``pos`` and locate PixelData's value.

    Parameters
    ----------
    f : binary file object
        The file (or the inflated dataset), seekable.
    pos : int
        Offset where :func:`parse_dataset` stopped.
    total : int
        Bytes in the file (or in the inflated dataset).
    transfer_syntax : str
        Transfer syntax UID (implicit VR little endian has 8-byte element headers).
    little_endian : bool
        Byte order of the dataset.
    name : str
        Name used in messages.

    Returns
    -------
    (int or None, int or None)
        Offset of the PixelData value and its declared length (None for
        encapsulated data, of undefined length); ``(None, None)`` when the
        element at ``pos`` is not PixelData.

    Raises
    ------
    UnsupportedDataError
        FloatPixelData or DoubleFloatPixelData.
    CorruptFileError
        The file ends inside PixelData's element header.
    """
    if total - pos < 8:
        return None, None
    f.seek(pos)
    raw = f.read(12)
    tag = (struct.unpack("<HH" if little_endian else ">HH", raw[:4]))
    tag = (tag[0] << 16) | tag[1]
    if tag in _OTHER_PIXEL_TAGS:
        raise UnsupportedDataError("float pixel data is not supported", path=name, keyword=_OTHER_PIXEL_TAGS[tag])
    if tag != _PIXEL_TAG:
        return None, None
    e = "<" if little_endian else ">"
    if transfer_syntax == _IMPLICIT_LE:  # implicit VR
        length = struct.unpack(e + "I", raw[4:8])[0]
        pixel_offset = pos + 8
    else:
        if len(raw) < 12:
            raise CorruptFileError("the file is truncated at PixelData", path=name, keyword="PixelData")
        length = struct.unpack(e + "I", raw[8:12])[0]
        pixel_offset = pos + 12
    return pixel_offset, None if length == 0xFFFFFFFF else length


def check_fragments(
    f,
    *,
    offset: int,
    file_size: int,
    little_endian: bool,
    implicit: bool,
    rows: int,
    columns: int,
    frames: int,
    name: str,
) -> None:
    """Walk the encapsulated items (headers only) up to the sequence delimiter.

    The first fragment's codestream size is compared with Rows/Columns, then
    the elements after the pixel data are walked (:func:`check_trailing`).

    Parameters
    ----------
    f : binary file object
        The file (or the inflated dataset), seekable.
    offset : int
        Offset of the PixelData value (its first item).
    file_size : int
        Bytes in the file (or in the inflated dataset).
    little_endian, implicit : bool
        Encoding of the dataset.
    rows, columns, frames : int
        Rows, Columns and NumberOfFrames of the header.
    name : str
        Name used in messages.

    Raises
    ------
    CorruptFileError
        If the file ends before the Sequence Delimitation Item, an item runs
        past the end of the file, or an unexpected tag appears (PS3.5 A.4).
    """
    n_items = 0
    e = "<" if little_endian else ">"
    f.seek(offset)
    pos, end = offset, file_size
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptFileError(
                "the file is truncated inside the compressed pixel data", path=name, keyword="PixelData"
            )
        group, elem, length = struct.unpack(e + "HHI", head)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF or pos + length > end:
            raise CorruptFileError(
                "the compressed pixel data is damaged or truncated (bad item)", path=name, keyword="PixelData"
            )
        n_items += 1
        if n_items > frames + 1 + 4 * frames * 64 + 1024:  # fragments per frame are bounded in practice
            raise CorruptFileError("too many pixel data fragments", path=name, keyword="PixelData")
        if n_items == 2 and length:
            dims = codestream_dims(f.read(min(length, 4096)))
            if dims is not None and dims != (rows, columns):
                raise CorruptFileError(
                    "the compressed image's own size disagrees with Rows/Columns", path=name, keyword="Rows"
                )
        pos += length
        f.seek(pos)
    if n_items < 2:  # the Basic Offset Table item plus at least one fragment
        raise CorruptFileError("the compressed pixel data holds no fragment", path=name, keyword="PixelData")
    check_trailing(f, pos, file_size=file_size, little_endian=little_endian, implicit=implicit, name=name)


def check_trailing(f, pos: int, *, file_size: int, little_endian: bool, implicit: bool, name: str) -> None:
    """Walk the elements after PixelData (e.g. DataSetTrailingPadding) by their headers.

    Parameters
    ----------
    f : binary file object
        The file (or the inflated dataset), seekable.
    pos : int
        Offset just after the pixel data.
    file_size : int
        Bytes in the file (or in the inflated dataset).
    little_endian, implicit : bool
        Encoding of the dataset.
    name : str
        Name used in messages.

    Raises
    ------
    CorruptFileError
        If one of them runs past the end of the file (the file was cut).
    """
    e = "<" if little_endian else ">"
    for _ in range(64):
        if file_size - pos == 0:
            return
        f.seek(pos)
        head = f.read(12)
        if len(head) < 8:
            if head.strip(b"\x00"):
                raise CorruptFileError("the file is truncated after the pixel data", path=name)
            return
        if implicit:
            length = struct.unpack(e + "I", head[4:8])[0]
            start = pos + 8
        elif head[4:6] in _LONG_VRS:
            if len(head) < 12:
                raise CorruptFileError("the file is truncated after the pixel data", path=name)
            length = struct.unpack(e + "I", head[8:12])[0]
            start = pos + 12
        else:
            length = struct.unpack(e + "H", head[6:8])[0]
            start = pos + 8
        if length == 0xFFFFFFFF:
            return  # an undefined-length trailing sequence: not walked
        if start + length > file_size:
            raise CorruptFileError("the file is truncated after the pixel data", path=name)
        pos = start + length
