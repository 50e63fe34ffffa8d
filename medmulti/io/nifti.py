"""Read NIfTI-1 / NIfTI-2 (``.nii``, ``.nii.gz``) volumes.

* The header is parsed and checked by nibabel (dimensions, data type, offset)
  before anything else touches the file; sizes are checked against
  :class:`~medmulti.io.limits.Limits` and against the bytes present.
* Geometry comes from SimpleITK's header reader (``ReadImageInformation``), so
  origin/spacing/direction equal ``sitk.ReadImage`` for every qform/sform case.
* NaN voxels (float data) become 0, as SimpleITK reads them; the count is
  recorded in ``meta["nan_voxels_zeroed"]``.
* Values are streamed: the (inflated) data is read in blocks and each block is
  scaled (``scl_slope``/``scl_inter``) straight into the preallocated float32
  ``(z, y, x)`` array, so peak memory stays near the output size and a deflate
  bomb cannot inflate past the declared size.
* A ``.nii.gz`` is inflated to the trailer of the gzip member holding the end
  of the data (:func:`finish_nifti_stream`), so a cut stream, a failed inflate
  and a CRC-32 or length mismatch are :class:`~medmulti.errors.CorruptFileError`;
  header-level inspection does the same without converting values.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptFileError, UnsupportedDataError
from ..image import Image, affine_from_itk
from .error_ladder import reader_errors
from .limits import Limits
from .safe_files import open_regular

__all__ = ["read_nifti", "NiftiHeaderInfo", "read_nifti_header", "NiftiStream", "finish_nifti_stream"]

_BLOCK = 1 << 20  # bytes inflated / converted per step: small enough to stay in the CPU caches
_READ = 1 << 20  # compressed bytes read from the file per step
#: Inflated bytes past the declared data that are inflated, at most, to reach the
#: gzip trailer of the member holding the end of the data (a deflate bomb stops there).
GZIP_TAIL_LIMIT = 1 << 20


def _inflater():
    """A gzip decompressor: ISA-L's when installed (about 2.3x faster than
    zlib here, which made .nii.gz reading slower than SimpleITK's zlib-ng), else zlib."""
    try:
        from isal import isal_zlib

        return isal_zlib.decompressobj(wbits=31)  # gzip members only
    except ImportError:  # pragma: no cover - isal is a dependency
        return zlib.decompressobj(wbits=31)


class NiftiStream:
    """Sequential reader of a file's (possibly gzip-inflated) bytes.

    For ``.nii.gz`` the file is inflated as it is read, member after member
    (concatenated gzip members, with zero padding between them as gzip allows):
    at most :data:`_READ` compressed bytes are held, never the whole file. The
    inflater checks each member's CRC-32 and length (ISIZE) when it reaches the
    member's trailer; a failure raises :class:`~medmulti.errors.CorruptFileError`.
    A stream that ends early just returns fewer bytes: the caller, which knows
    how many it needs, says "truncated".
    """

    def __init__(self, path: Path, gz: bool, name: str) -> None:
        self.f = open_regular(path, name=name)
        self.gz = gz
        self.name = name
        self.d = _inflater() if gz else None
        self.pending = b""
        self.pushback = b""

    def unread(self, data: bytes) -> None:
        """Push bytes back so the next read returns them first."""
        if not self.gz:
            self.f.seek(-len(data), 1)
        else:
            self.pushback = data + self.pushback

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _decompress(self, n: int) -> bytes:
        """Inflate up to ``n`` bytes of the current member from ``pending``."""
        try:
            out = self.d.decompress(self.pending, n)
        except MemoryError:
            raise
        except Exception:  # zlib.error / isal's IsalError: bad deflate data, CRC-32 or length mismatch
            raise CorruptFileError(
                "the compressed NIfTI data is damaged: inflating failed, or the gzip CRC-32 or length "
                "does not match the data",
                path=self.name,
            ) from None
        self.pending = self.d.unconsumed_tail
        return out

    def _refill(self) -> bool:
        """Read the next compressed bytes into ``pending``; False at the end of the file."""
        self.pending = self.f.read(_READ)
        return bool(self.pending)

    def _next_member(self) -> bool:
        """Start the gzip member after the one that ended; False at the end of the file."""
        rest = self.d.unused_data
        while True:
            rest = rest.lstrip(b"\0")  # zero padding between members, as gzip skips it
            if rest:
                break
            rest = self.f.read(_READ)
            if not rest:
                return False
        self.d = _inflater()
        self.pending = rest
        return True

    def _inflate(self, n: int) -> bytes:
        """Up to ``n`` inflated bytes (at least one), crossing members; b"" at the end of the file."""
        while True:
            if self.d.eof and not self._next_member():
                return b""
            at_end = not self.pending and not self._refill()
            out = self._decompress(n)  # at the end: what the inflater still holds
            if out or at_end:
                return out

    def _take_pushback(self, n: int) -> bytes:
        head, self.pushback = self.pushback[:n], self.pushback[n:]
        return head

    def read(self, n: int) -> bytes:
        """Return up to ``n`` bytes (fewer only at the end of the data)."""
        if not self.gz:
            return self.f.read(n)
        parts = [self._take_pushback(n)] if self.pushback else []
        got = len(parts[0]) if parts else 0
        while got < n:
            out = self._inflate(min(_BLOCK, n - got))
            if not out:
                break
            parts.append(out)
            got += len(out)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Discard ``n`` bytes; return how many were skipped."""
        if not self.gz:
            start = self.f.tell()
            self.f.seek(0, 2)
            end = self.f.tell()
            self.f.seek(min(end, start + n))
            return min(end, start + n) - start
        done = len(self._take_pushback(n)) if self.pushback else 0
        while done < n:
            out = self._inflate(min(_BLOCK, n - done))
            if not out:
                break
            done += len(out)
        return done

    def readinto(self, buf: memoryview) -> int:
        """Fill ``buf`` (bytes); return the number of bytes read."""
        if not self.gz:
            pos = 0
            while pos < len(buf):
                k = self.f.readinto(buf[pos:])
                if not k:
                    break
                pos += k
            return pos
        pos = 0
        if self.pushback:
            head = self._take_pushback(len(buf))
            buf[: len(head)] = head
            pos = len(head)
        while pos < len(buf):
            out = self._inflate(len(buf) - pos)
            if not out:
                break
            buf[pos : pos + len(out)] = out
            pos += len(out)
        return pos

    def finish_member(self) -> None:
        """Inflate to the trailer of the gzip member being read, so its CRC-32 and length are checked.

        Bytes after that member (further members, padding or garbage) are not
        read. Inflated bytes left in the member are discarded, at most
        :data:`GZIP_TAIL_LIMIT` of them: a member that holds more stops there
        unchecked (a deflate bomb cannot make reading slow).

        Raises
        ------
        CorruptFileError
            The file ends before the member's trailer (truncated), or the
            inflater fails (damaged data, CRC-32 or length mismatch).
        """
        extra = len(self.pushback)
        self.pushback = b""
        while not self.d.eof:
            if extra > GZIP_TAIL_LIMIT:
                return
            at_end = not self.pending and not self._refill()
            out = self._decompress(1 << 16)
            if at_end and not out and not self.d.eof:
                raise CorruptFileError(
                    "the compressed NIfTI file is truncated: its gzip stream ends before the gzip trailer",
                    path=self.name,
                )
            extra += len(out)


class NiftiHeaderInfo:
    """What the NIfTI header declares (after nibabel's checks).

    Attributes
    ----------
    shape : tuple of int
        Data shape in NIfTI order ``(x, y, z[, t])`` (trailing unit dims dropped).
    dtype : numpy.dtype
        On-disk data type (with byte order).
    vox_offset : int
        Offset of the data in the (inflated) stream.
    slope, inter : float
        Value scaling (1, 0 when unused).
    version : int
        1 or 2.
    """

    def __init__(self, shape, dtype, vox_offset, slope, inter, version) -> None:
        self.shape = shape
        self.dtype = dtype
        self.vox_offset = vox_offset
        self.slope = slope
        self.inter = inter
        self.version = version


def read_nifti_header(stream: NiftiStream, name: str, limits: Limits) -> tuple[NiftiHeaderInfo, int]:
    """Read and check a NIfTI header from the start of ``stream``.

    ``sizeof_hdr`` (read little-endian, else big-endian) of 540 means NIfTI-2;
    anything else is parsed as NIfTI-1 by nibabel with its checks on.

    Parameters
    ----------
    stream : NiftiStream
        The file's bytes (gzip-inflated for ``.nii.gz``), positioned at the start.
    name : str
        File name used in errors.
    limits : Limits
        Caps on the declared voxels and bytes.

    Returns
    -------
    info : NiftiHeaderInfo
        Shape in NIfTI order ``(x, y, z[, t])`` with trailing unit dimensions
        beyond the third dropped, on-disk dtype, ``vox_offset`` (0 read as 352
        for NIfTI-1, 544 for NIfTI-2), ``slope``/``inter`` (1 and 0 when unset
        or not finite) and ``version``; nibabel's header object is attached as
        ``info.header``.
    consumed : int
        Bytes of the header consumed: 348 (NIfTI-1) or 540 (NIfTI-2). Bytes
        read beyond it are pushed back, so the stream is left right after the
        header.

    Raises
    ------
    CorruptFileError
        Fewer bytes than a header, a header nibabel cannot parse or whose
        checks fail, a dimension that is not positive, or a ``vox_offset``
        inside the header or beyond ``limits.max_bytes``.
    UnsupportedDataError
        Fewer than 3 or more than 4 dimensions, or complex/RGB (not integer or
        float) data.
    ResourceLimitError
        Spatial voxels (the first three axes) beyond ``limits.max_voxels``, or
        data bytes (all volumes) beyond ``limits.max_bytes``.
    """
    import io

    import nibabel as nib

    head = stream.read(540)
    if len(head) < 348:
        raise CorruptFileError("the NIfTI header is truncated", path=name)
    size = int.from_bytes(head[:4], "little")
    if size not in (348, 540):
        size = int.from_bytes(head[:4], "big")
    if size == 540 and len(head) < 540:
        raise CorruptFileError("the NIfTI-2 header is truncated", path=name)
    with reader_errors(name, corrupt="the NIfTI header cannot be parsed or fails nibabel's checks"):
        if size == 540:
            hdr = nib.Nifti2Header.from_fileobj(io.BytesIO(head), check=True)
            version = 2
        else:
            hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(head[:348]), check=True)
            version = 1
        shape = tuple(int(v) for v in hdr.get_data_shape())
        dtype = hdr.get_data_dtype()
        vox_offset = int(hdr["vox_offset"])
        slope, inter = hdr.get_slope_inter()
    consumed = len(head)
    if vox_offset == 0:  # single file written with vox_offset 0: data follow header + extension flag
        vox_offset = 352 if version == 1 else 544
    if consumed > (348 if version == 1 else 540):
        stream.unread(head[(348 if version == 1 else 540):])
        consumed = 348 if version == 1 else 540
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if any(s <= 0 for s in shape):
        raise CorruptFileError("NIfTI dimensions must be positive", path=name, keyword="dim")
    if len(shape) < 3:
        raise UnsupportedDataError("2D NIfTI images are not supported; medmulti reads 3D volumes", path=name, keyword="dim", argument="volume")
    if len(shape) > 4:
        raise UnsupportedDataError("NIfTI images with more than 4 dimensions are not supported", path=name, keyword="dim", argument="volume")
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise UnsupportedDataError("complex or RGB NIfTI data is not supported", path=name, keyword="datatype")
    nvox = int(np.prod(shape, dtype=object))
    limits.check_voxels(nvox if len(shape) == 3 else int(np.prod(shape[:3], dtype=object)), path=name, keyword="dim")
    limits.check_bytes(nvox * dtype.itemsize, path=name, keyword="dim")
    if vox_offset < (352 if version == 1 else 544) - 4 or vox_offset > limits.max_bytes:
        raise CorruptFileError("vox_offset points inside the header or beyond the cap", path=name, keyword="vox_offset")
    slope = 1.0 if slope is None or not np.isfinite(slope) else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    info = NiftiHeaderInfo(shape, dtype, vox_offset, slope, inter, version)
    info.header = hdr
    return info, consumed


def _header_only_copy(header: Any) -> str | None:
    """A temporary ``.nii`` holding only ``header`` (text fields blanked, no extensions); None if none can be written.

    SimpleITK's header reader inflates about 1-2 MiB of a ``.nii.gz`` (2-7 ms),
    against 0.3 ms for the same header uncompressed.
    """
    import os
    import tempfile

    h = header.copy()
    for key in ("descrip", "aux_file", "db_name", "intent_name"):  # free text: nothing of it reaches the disk
        if key in h:
            h[key] = b""
    block = h.binaryblock + b"\0" * 4  # extension flag 0
    try:
        fd, tmp = tempfile.mkstemp(suffix=".nii", prefix="medmulti-hdr-")
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(block)
    except OSError:
        os.unlink(tmp)
        return None
    return tmp


def _itk_information(path: str):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.SetImageIO("NiftiImageIO")  # the content is NIfTI: no probing of every ImageIO (about 1 ms)
    reader.ReadImageInformation()
    dim = reader.GetDimension()
    d = np.asarray(reader.GetDirection(), float).reshape(dim, dim)[:3, :3]
    return reader.GetOrigin()[:3], reader.GetSpacing()[:3], d.ravel(), "simpleitk"


def itk_geometry(path: Path, name: str, header: Any = None, *, gz: bool = False):
    """Return ITK ``(origin, spacing, direction)`` and where they came from.

    SimpleITK's header reader is the reference. For NIfTI-2 files (which this
    SimpleITK cannot read: it fails and prints to the process's standard error)
    and the few NIfTI-1 files it cannot open, nibabel's best affine (sform if its code is
    set, else qform) is used, converted to LPS. For a ``.nii.gz`` (``gz``) with
    its ``header`` given, SimpleITK reads an uncompressed copy of the header
    alone (a private temporary file, its free-text fields blanked), which gives
    the same geometry without inflating the file again; the file itself is read
    when that copy cannot be written or read.
    """
    import os

    if header is not None:  # SimpleITK loops for minutes on a NaN/inf sform or quaternion: refuse them first
        keys = [k for k in ("pixdim", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z",
                            "srow_x", "srow_y", "srow_z") if k in header]
        values = np.concatenate([np.ravel(np.asarray(header[k], np.float64))[:4] if k == "pixdim"
                                 else np.ravel(np.asarray(header[k], np.float64)) for k in keys])
        if not np.all(np.isfinite(values)):
            raise CorruptFileError("the NIfTI geometry (pixdim/quaternion/sform) holds NaN or infinite values",
                                   path=name, keyword="srow_x")
    if header is not None and _is_nifti2(header):  # SimpleITK reads no NIfTI-2 file and prints an error doing so
        return _nibabel_geometry(header, name)
    copy = _header_only_copy(header) if gz and header is not None else None
    if copy is not None:
        try:
            return _itk_information(copy)
        except RuntimeError:
            pass  # the file itself decides
        finally:
            os.unlink(copy)
    try:
        return _itk_information(str(path))
    except RuntimeError:
        if header is None:
            raise CorruptFileError("the NIfTI geometry (qform/sform) cannot be interpreted", path=name, keyword="sform_code") from None
    return _nibabel_geometry(header, name)


def _is_nifti2(header: Any) -> bool:
    import nibabel as nib

    return isinstance(header, nib.Nifti2Header)


def _nibabel_geometry(header: Any, name: str):
    """ITK ``(origin, spacing, direction)`` from nibabel's best affine (sform if its code is set, else qform)."""
    try:
        ras = np.asarray(header.get_best_affine(), float)
    except Exception:
        raise CorruptFileError("the NIfTI geometry (qform/sform) cannot be interpreted", path=name, keyword="sform_code") from None
    lps = np.diag([-1.0, -1.0, 1.0]) @ ras[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if not np.all(np.isfinite(lps)) or np.any(spacing <= 0):
        raise CorruptFileError("the NIfTI affine is degenerate", path=name, keyword="sform_code")
    origin = np.diag([-1.0, -1.0, 1.0]) @ ras[:3, 3]
    return tuple(origin), tuple(spacing), (lps / spacing[None, :]).ravel(), "nibabel"


def finish_nifti_stream(stream: NiftiStream, remaining: int, name: str) -> None:
    """Inflate the rest of a ``.nii.gz``'s declared data and of its gzip member, discarding it.

    What :func:`read_nifti` does after the voxels it returns, and all that
    header-level inspection does after the header: a cut or damaged stream
    is found without converting a single value.

    Parameters
    ----------
    stream : NiftiStream
        A gzip stream, positioned inside or at the end of the header/data.
    remaining : int
        Inflated bytes from the stream's position to the end of the declared
        data (``vox_offset`` + all volumes).
    name : str
        File name for messages.

    Raises
    ------
    CorruptFileError
        The stream ends before the declared data or before the trailer of the
        member holding their end (truncated); inflating fails; the CRC-32 or
        length in a member's trailer does not match (damaged).

    Notes
    -----
    Bytes after the gzip member that holds the end of the data (further
    members, zero padding, garbage) are not read, as nibabel and SimpleITK
    (zlib's ``gzread``) do not read them either. Inflated bytes past the
    declared data within that member are discarded, at most
    :data:`GZIP_TAIL_LIMIT` (1 MiB): a member holding more is not checked
    further, so a deflate bomb costs no time.
    """
    if stream.skip(remaining) != remaining:
        raise CorruptFileError(
            "the compressed NIfTI file is truncated: its gzip stream ends before the declared data",
            path=name, keyword="dim",
        )
    stream.finish_member()


def checked_affine(origin, spacing, direction, name: str) -> np.ndarray:
    """Build the affine, refusing non-finite or degenerate geometry."""
    with np.errstate(all="ignore"):
        affine = affine_from_itk(origin, spacing, direction)
        bad = (
            not np.all(np.isfinite(affine))
            or np.any(np.asarray(spacing, float) <= 0)
            or abs(np.linalg.det(affine[:3, :3])) < 1e-12
        )
    if bad:
        raise CorruptFileError("the NIfTI geometry (pixdim, qform/sform) is degenerate or not finite", path=name, keyword="pixdim")
    return affine


def read_nifti(path: Path, modality: str | None, *, volume: int | None, limits: Limits, gz: bool, name: str) -> Image:
    """Read a 3D NIfTI volume (or one volume of a 4D file).

    Parameters
    ----------
    path : pathlib.Path
        The ``.nii`` / ``.nii.gz`` file (recognised by content).
    modality : str, optional
        Modality recorded on the image (default ``"MR"``).
    volume : int, optional
        Index along the 4th dimension; required for 4D files.
    limits : Limits
        Caps.
    gz : bool
        The file is gzip-compressed.
    name : str
        File name for messages.

    Returns
    -------
    Image
        float32 ``(z, y, x)`` with ``scl_slope``/``scl_inter`` applied; affine
        equal to SimpleITK's geometry for the file.

    Raises
    ------
    CorruptFileError, UnsupportedDataError, ResourceLimitError
    """
    ladder = reader_errors(
        name,
        memory="not enough memory for this NIfTI volume",
        corrupt="the NIfTI file cannot be read (damaged or truncated compressed data)",  # zlib.error, OSError, EOFError ...
    )
    with ladder, NiftiStream(path, gz, name) as stream:
        info, consumed = read_nifti_header(stream, name, limits)
        shape = info.shape
        if len(shape) == 4:
            if volume is None:
                raise UnsupportedDataError(
                    f"this NIfTI file is 4D ({shape[3]} volumes); medmulti reads 3D volumes",
                    path=name,
                    keyword="dim", argument="volume",
                    hint="pass volume=<index> (0-based) to read one of them",
                )
            if not 0 <= int(volume) < shape[3]:
                raise UnsupportedDataError(
                    f"volume={int(volume)} is out of range for {shape[3]} volumes", path=name, keyword="dim", argument="volume"
                )
        elif volume not in (None, 0):
            raise UnsupportedDataError("volume= was given but the NIfTI file is 3D", path=name, keyword="dim", argument="volume")
        nx, ny, nz = shape[:3]
        per_volume = nx * ny * nz
        start = info.vox_offset + (int(volume) * per_volume * info.dtype.itemsize if len(shape) == 4 else 0)
        total_end = info.vox_offset + int(np.prod(shape, dtype=object)) * info.dtype.itemsize
        if not gz:
            import os

            size = os.fstat(stream.f.fileno()).st_size
            if size < total_end:
                raise CorruptFileError("the NIfTI file is truncated: it ends before the declared data", path=name, keyword="dim")
        if stream.skip(start - consumed) != start - consumed:
            raise CorruptFileError("the NIfTI file is truncated before its data", path=name, keyword="vox_offset")
        out = np.empty((nz, ny, nx), np.float32)
        n_nan = _stream_values(stream, info, out.reshape(-1), name)
        if gz:
            finish_nifti_stream(stream, total_end - (start + per_volume * info.dtype.itemsize), name)
    origin, spacing, direction, geometry_source = itk_geometry(path, name, info.header, gz=gz)
    affine = checked_affine(origin, spacing, direction, name)
    meta: dict[str, Any] = {
        "source": "nifti",
        "nifti_version": info.version,
        "dtype": info.dtype.newbyteorder("=").name,
        "scl_slope": info.slope,
        "scl_inter": info.inter,
        "geometry_source": geometry_source,
    }
    if n_nan:
        meta["nan_voxels_zeroed"] = n_nan
    if len(shape) == 4:
        meta["volume"] = int(volume)
        meta["n_volumes"] = int(shape[3])
    return Image(out, affine, (float(spacing[2]), float(spacing[1]), float(spacing[0])), (modality or "MR").upper(), meta)


def _may_overflow(info: NiftiHeaderInfo) -> bool:
    """Whether scaled integer values can leave the float32 range (become infinite)."""
    lo, hi = np.iinfo(info.dtype).min, np.iinfo(info.dtype).max
    return not max(abs(info.slope * lo + info.inter), abs(info.slope * hi + info.inter)) < 1e38


def _stream_values(stream: NiftiStream, info: NiftiHeaderInfo, out: np.ndarray, name: str) -> int:
    """Fill flat float32 ``out`` from the stream, block by block; return the NaN voxels zeroed.

    Each block of at most ``_BLOCK`` bytes is inflated (native float32: straight
    into ``out``; other types: into one reused buffer and converted), scaled
    and checked while it is in the CPU caches: NaN -> 0 (float data, as
    SimpleITK), infinite values refused. Integer data whose scaled range fits
    float32 cannot be infinite and is not checked.
    """
    dtype = info.dtype
    direct = dtype.kind == "f" and dtype.itemsize == 4 and dtype.isnative
    scaled = info.slope != 1 or info.inter != 0
    check = dtype.kind == "f" or (scaled and _may_overflow(info))
    item = dtype.itemsize
    per_block = max(1, _BLOCK // item)
    raw = None if direct else np.empty(per_block * item, np.uint8)
    n_nan = 0
    for pos in range(0, out.size, per_block):
        dst = out[pos : pos + per_block]
        buf = memoryview(dst).cast("B") if direct else memoryview(raw)[: dst.size * item]
        if stream.readinto(buf) != len(buf):
            raise CorruptFileError("the NIfTI data is truncated", path=name, keyword="dim")
        with np.errstate(over="ignore", invalid="ignore"):
            if direct:
                if scaled:
                    dst *= info.slope
                    dst += info.inter
            elif scaled:  # in float64, as ITK and nibabel do, then rounded once
                dst[...] = raw[: len(buf)].view(dtype) * info.slope + info.inter
            else:
                dst[...] = raw[: len(buf)].view(dtype)
        if check and not np.isfinite(dst).all():
            if dtype.kind == "f":  # as SimpleITK does: NaN voxels read as 0
                nan = np.isnan(dst)
                n_nan += int(np.count_nonzero(nan))
                dst[nan] = 0.0
            if not np.isfinite(dst).all():
                raise CorruptFileError(
                    "the NIfTI data holds infinite values (or scl_slope/scl_inter overflow float32)",
                    path=name,
                    keyword="scl_slope",
                )
    return n_nan
