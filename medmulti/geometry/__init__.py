"""Geometry: canonical reorientation, reference grids, resampling, rigid registration, grid checks.

Every function works on :class:`~medmulti.image.Image` objects whose ``affine``
maps array indices ``(z, y, x, 1)`` to LPS millimetres (DESIGN.md).
"""

from .affines import apply_affine, grid_center, grid_corners, rigid_matrix, rotation_angle_deg, voxel_sizes
from .consistency import Mismatch, check_coregistered
from .orientation import canonical_transform, is_canonical, orientation_codes, reorient_canonical
from .registration import Initialization, RegistrationResult, register_rigid, rigid_registration
from .resample import Grid, Interpolation, body_center, fill_value_for, fit_2d, make_grid, resample_to

__all__ = [
    "apply_affine",
    "grid_center",
    "grid_corners",
    "rigid_matrix",
    "rotation_angle_deg",
    "voxel_sizes",
    "Mismatch",
    "check_coregistered",
    "canonical_transform",
    "is_canonical",
    "orientation_codes",
    "reorient_canonical",
    "Initialization",
    "RegistrationResult",
    "register_rigid",
    "rigid_registration",
    "Grid",
    "Interpolation",
    "body_center",
    "fill_value_for",
    "fit_2d",
    "make_grid",
    "resample_to",
]
