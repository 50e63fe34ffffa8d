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

__all__ = ["read_nifti", "NiftiHeaderInfo", "read_nifti_header"]

_BLOCK = 1 << 22  # 4 MiB of decoded data per step


def _inflater():
    """A gzip/zlib decompressor: ISA-L's when installed (about 2.3x faster than
    zlib here, which made .nii.gz reading slower than SimpleITK's zlib-ng), else zlib."""
    try:
        from isal import isal_zlib

        return isal_zlib.decompressobj(wbits=47)
    except ImportError:  # pragma: no cover - isal is a dependency
        return zlib.decompressobj(wbits=47)


class NiftiStream:
    """Sequential reader of a file's (possibly gzip-inflated) bytes."""

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

    def read(self, n: int) -> bytes:
        """Return up to ``n`` bytes (fewer only at the end of the data)."""
        if not self.gz:
            return self.f.read(n)
        parts, got = [], 0
        if self.pushback:
            parts.append(self.pushback[:n])
            self.pushback = self.pushback[n:]
            got = len(parts[0])
        while got < n:
            if self.d.eof:  # concatenated gzip members
                rest = self.d.unused_data or self.f.read(1 << 20)
                if not rest:
                    break
                self.d = _inflater()
                self.pending = rest
            if not self.pending:
                self.pending = self.f.read(1 << 20)
                if not self.pending:
                    break
            out = self.d.decompress(self.pending, n - got)
            self.pending = self.d.unconsumed_tail
            if out:
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
        done = 0
        while done < n:
            chunk = self.read(min(_BLOCK, n - done))
            if not chunk:
                break
            done += len(chunk)
        return done

    def readinto(self, buf: memoryview) -> int:
        """Fill ``buf``; return the number of bytes read."""
        if not self.gz:
            return self.f.readinto(buf)
        pos = 0
        if self.pushback:
            k = min(len(self.pushback), len(buf))
            buf[:k] = self.pushback[:k]
            self.pushback = self.pushback[k:]
            pos = k
        while pos < len(buf):
            chunk = self.read(min(_BLOCK, len(buf) - pos))
            if not chunk:
                break
            buf[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        return pos


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
        raise UnsupportedDataError("2D NIfTI images are not supported; medmulti reads 3D volumes", path=name, keyword="dim")
    if len(shape) > 4:
        raise UnsupportedDataError("NIfTI images with more than 4 dimensions are not supported", path=name, keyword="dim")
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


def itk_geometry(path: Path, name: str, header: Any = None):
    """Return ITK ``(origin, spacing, direction)`` and where they came from.

    SimpleITK's header reader is the reference. For the few files it cannot
    open (e.g. some NIfTI-2 files), nibabel's best affine (sform if its code is
    set, else qform) is used, converted to LPS.
    """
    import SimpleITK as sitk

    if header is not None:  # SimpleITK loops for minutes on a NaN/inf sform or quaternion: refuse them first
        keys = [k for k in ("pixdim", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z",
                            "srow_x", "srow_y", "srow_z") if k in header]
        values = np.concatenate([np.ravel(np.asarray(header[k], np.float64))[:4] if k == "pixdim"
                                 else np.ravel(np.asarray(header[k], np.float64)) for k in keys])
        if not np.all(np.isfinite(values)):
            raise CorruptFileError("the NIfTI geometry (pixdim/quaternion/sform) holds NaN or infinite values",
                                   path=name, keyword="srow_x")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        origin = reader.GetOrigin()[:3]
        spacing = reader.GetSpacing()[:3]
        d = np.asarray(reader.GetDirection(), float).reshape(dim, dim)[:3, :3]
        return origin, spacing, d.ravel(), "simpleitk"
    except RuntimeError:
        if header is None:
            raise CorruptFileError("the NIfTI geometry (qform/sform) cannot be interpreted", path=name, keyword="sform_code") from None
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


def _finish_gzip(stream: NiftiStream, remaining: int, name: str) -> None:
    """Inflate the rest of a gzip stream so a cut or corrupted end is caught.

    zlib verifies the CRC-32 and length in the gzip trailer at the end of the
    member; a stream that stops before it is truncated. Trailing bytes beyond
    the declared data are inflated at most 1 MiB further (a bomb stops there).
    """
    if stream.skip(remaining) != remaining:
        raise CorruptFileError("the compressed NIfTI file is truncated", path=name, keyword="dim")
    extra = 0
    while not stream.d.eof:
        chunk = stream.read(1 << 16)
        if not chunk:
            if stream.d.eof:
                break
            raise CorruptFileError("the compressed NIfTI file is truncated (no gzip trailer)", path=name)
        extra += len(chunk)
        if extra > 1 << 20:
            break


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
                    keyword="dim",
                    hint="pass volume=<index> (0-based) to read one of them",
                )
            if not 0 <= int(volume) < shape[3]:
                raise UnsupportedDataError(
                    f"volume={int(volume)} is out of range for {shape[3]} volumes", path=name, keyword="dim"
                )
        elif volume not in (None, 0):
            raise UnsupportedDataError("volume= was given but the NIfTI file is 3D", path=name, keyword="dim")
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
        _stream_values(stream, info, out.reshape(-1), name)
        if gz:
            _finish_gzip(stream, total_end - (start + per_volume * info.dtype.itemsize), name)
        n_nan = 0
        if info.dtype.kind == "f":
            nan = np.isnan(out)
            n_nan = int(np.count_nonzero(nan))
            if n_nan:  # as SimpleITK does: NaN voxels read as 0
                out[nan] = 0.0
            del nan
        if not np.isfinite(out).all():
            raise CorruptFileError(
                "the NIfTI data holds infinite values (or scl_slope/scl_inter overflow float32)",
                path=name,
                keyword="scl_slope",
            )
    origin, spacing, direction, geometry_source = itk_geometry(path, name, info.header)
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


def _stream_values(stream: NiftiStream, info: NiftiHeaderInfo, out: np.ndarray, name: str) -> None:
    """Fill flat float32 ``out`` from the stream, scaling block by block."""
    dtype = info.dtype
    if dtype == np.dtype("<f4") or dtype == np.dtype("=f4"):
        n = stream.readinto(memoryview(out).cast("B"))
        if n != out.nbytes:
            raise CorruptFileError("the NIfTI data is truncated", path=name, keyword="dim")
        if info.slope != 1 or info.inter != 0:
            with np.errstate(over="ignore", invalid="ignore"):
                out[...] = out * info.slope + info.inter
        return
    item = dtype.itemsize
    per_block = max(1, _BLOCK // item)
    pos = 0
    total = out.size
    scaled = info.slope != 1 or info.inter != 0
    while pos < total:
        count = min(per_block, total - pos)
        raw = stream.read(count * item)
        if len(raw) != count * item:
            raise CorruptFileError("the NIfTI data is truncated", path=name, keyword="dim")
        vals = np.frombuffer(raw, dtype=dtype)
        dst = out[pos : pos + count]
        if scaled:  # in float64, as ITK and nibabel do, then rounded once
            with np.errstate(over="ignore", invalid="ignore"):
                dst[...] = vals * info.slope + info.inter
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                dst[...] = vals
        pos += count
