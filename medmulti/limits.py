"""Configurable caps on what a reader may allocate or walk.

Every size a file declares (Rows x Columns x NumberOfFrames, NIfTI ``dim[]``, an
inflated deflate payload, the number of files in a folder, sequence nesting) is
checked against these caps *before* memory is allocated, and against the bytes
actually present in the file. A header that asks for more raises
:class:`~medmulti.errors.ResourceLimitError`.

Examples
--------
>>> from medmulti.io.limits import Limits, DEFAULT_LIMITS
>>> small = Limits(max_voxels=64 ** 3)
>>> small.max_voxels < DEFAULT_LIMITS.max_voxels
True
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

from .errors import ResourceLimitError

__all__ = ["Limits", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class Limits:
    """Caps applied by every reader.

    Parameters
    ----------
    max_voxels : int
        Largest number of voxels (pixels x frames x slices) in one image.
        Default ``2**29`` (536,870,912: a 512 x 512 x 2048 CT, 2 GiB as float32).
    max_bytes : int
        Largest number of bytes one file may hold or inflate to (deflated DICOM,
        ``.nii.gz``). Default 4 GiB.
    max_frames : int
        Largest NumberOfFrames in one DICOM object. Default 10,000.
    max_files : int
        Largest number of files scanned under one folder. Default 100,000.
    max_depth : int
        Deepest DICOM sequence nesting accepted (real objects stay below ~8).
        Default 32.
    """

    max_voxels: int = 2**29
    max_bytes: int = 4 * 2**30
    max_frames: int = 10_000
    max_files: int = 100_000
    max_depth: int = 32

    def check_voxels(self, n: int, *, path: str | PathLike[str] | None = None, keyword: str | None = None) -> None:
        """Raise :class:`ResourceLimitError` when ``n`` voxels exceed ``max_voxels``.

        Parameters
        ----------
        n : int
            Declared number of voxels.
        path : str or PathLike, optional
            File named in the error.
        keyword : str, optional
            Header field that declared the size.

        Raises
        ------
        ResourceLimitError
            If ``n > max_voxels`` or ``n < 0``.
        """
        if n < 0 or n > self.max_voxels:
            raise ResourceLimitError(
                f"the header declares an image larger than the {self.max_voxels:,}-voxel cap (or a negative size)",
                path=path,
                keyword=keyword,
                hint="raise medmulti.io.Limits(max_voxels=...) if the image is genuinely this large",
            )

    def check_bytes(self, n: int, *, path: str | PathLike[str] | None = None, keyword: str | None = None) -> None:
        """Raise :class:`ResourceLimitError` when ``n`` bytes exceed ``max_bytes``.

        Parameters
        ----------
        n : int
            Declared or inflated byte count.
        path : str or PathLike, optional
            File named in the error.
        keyword : str, optional
            Header field involved.

        Raises
        ------
        ResourceLimitError
            If ``n > max_bytes``.
        """
        if n > self.max_bytes:
            raise ResourceLimitError(
                f"the data is larger than the {self.max_bytes:,}-byte cap",
                path=path,
                keyword=keyword,
                hint="raise medmulti.io.Limits(max_bytes=...) if the file is genuine",
            )


#: The caps used when ``limits=None``.
DEFAULT_LIMITS = Limits()
