"""Rigid co-registration with SimpleITK (Mattes mutual information, multi-resolution).

The result is a 4x4 matrix mapping LPS points of the *fixed* image to LPS points
of the *moving* image -- the direction a resampler needs (for every output voxel,
where to read in the moving image), and what ITK's registration optimises.

Determinism: the metric samples a fixed fraction of voxels on a regular grid with
a seeded jitter, and the optimiser runs single-threaded by default, so the same
inputs give the same matrix (to ~1e-14: ITK's pyramid filters still split work
across threads, which can change floating-point summation order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

import numpy as np

from ..errors import RegistrationError
from ..image import Image
from .affines import apply_affine, grid_center, rotation_angle_deg
from .resample import as_sitk

__all__ = ["Initialization", "RegistrationResult", "register_rigid", "rigid_registration"]

log = logging.getLogger("medmulti.geometry.registration")

#: Samples drawn per resolution level (keeps cost independent of image size).
_SAMPLES_PER_LEVEL = 40_000


class Initialization(str, Enum):
    """Starting point of the optimiser."""

    HEADER = "header"  # identity: trust the headers' world coordinates
    MOMENTS = "moments"  # align centres of mass first (headers far off)


@dataclass
class RegistrationResult:
    """What :func:`rigid_registration` found.

    Attributes
    ----------
    matrix : numpy.ndarray
        4x4 mapping fixed LPS points to moving LPS points.
    metric_initial, metric_final : float
        Mattes mutual information (negative; lower is better) before and after,
        on the same samples of the shrunk working images (see ``max_voxels`` in
        :func:`rigid_registration`), not at full resolution.
    rotation_deg : float
        Rotation angle of ``matrix``.
    shift_mm : float
        Displacement of the fixed image's centre by ``matrix``.
    iterations : int
        Optimiser iterations at the last level.
    stop : str
        The optimiser's stopping condition.
    settings : dict
        The registration settings used.
    improved : bool
        False when the optimiser ended slightly worse than its starting point
        (within ``divergence_tol``) and the starting transform was kept.
    """

    matrix: np.ndarray
    metric_initial: float
    metric_final: float
    rotation_deg: float
    shift_mm: float
    iterations: int
    stop: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    improved: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (for ``Preprocessed.meta``)."""
        return {
            "method": "rigid",
            "matrix": self.matrix.tolist(),
            "metric": "mattes_mutual_information",
            "metric_initial": float(self.metric_initial),
            "metric_final": float(self.metric_final),
            "rotation_deg": float(self.rotation_deg),
            "shift_mm": float(self.shift_mm),
            "iterations": int(self.iterations),
            "improved": bool(self.improved),
            "settings": dict(self.settings),
        }


def _matrix_of(transform) -> np.ndarray:
    """4x4 of any affine-like SimpleITK transform, by mapping the origin and unit vectors."""
    p0 = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    m = np.eye(4)
    for i in range(3):
        e = [0.0, 0.0, 0.0]
        e[i] = 1.0
        m[:3, i] = np.asarray(transform.TransformPoint(tuple(e))) - p0
    m[:3, 3] = p0
    return m


def _levels(shape: Sequence[int], shrink: Sequence[int], smoothing_mm: Sequence[float]):
    keep = [(int(s), float(g)) for s, g in zip(shrink, smoothing_mm) if min(shape) / int(s) >= 8 or int(s) == 1]
    if not keep or keep[-1][0] != 1:
        keep.append((1, 0.0))
    return [k[0] for k in keep], [k[1] for k in keep]


def rigid_registration(
    fixed: Image,
    moving: Image,
    *,
    modality: str | None = None,
    initialization: Initialization | str = Initialization.HEADER,
    initial: np.ndarray | None = None,
    bins: int = 32,
    iterations: int = 200,
    shrink: Sequence[int] = (4, 2, 1),
    smoothing_mm: Sequence[float] = (4.0, 2.0, 0.0),
    seed: int = 0,
    threads: int = 1,
    max_rotation_deg: float = 45.0,
    max_shift_mm: float = 60.0,
    divergence_tol: float = 0.05,
    max_voxels: int = 400_000,
) -> RegistrationResult:
    """Rigidly register ``moving`` to ``fixed``; see :func:`register_rigid`.

    Same method as :func:`register_rigid` (which returns only ``.matrix``), with
    every setting exposed and the diagnostics returned.

    Parameters
    ----------
    fixed : Image
        3D image with an affine that defines the space; the rotation centre is
        the centre of its grid.
    moving : Image
        3D image with an affine to align to ``fixed``.
    modality : str, optional
        Name used in errors and in the debug log (default ``moving.modality``).
    initialization : {"header", "moments"} or Initialization
        ``"header"``: start from the identity (the headers' world alignment);
        ``"moments"``: start from SimpleITK's ``CenteredTransformInitializer``
        in ``MOMENTS`` mode (centres of mass aligned).
    initial : numpy.ndarray, optional
        4x4 starting matrix (fixed LPS -> moving LPS), overriding
        ``initialization``; its 3x3 part must be a rotation (SimpleITK's
        ``Euler3DTransform.SetMatrix`` accepts it to a tolerance of 1e-4).
    bins : int
        Histogram bins of the Mattes mutual information metric.
    iterations : int
        Maximum optimiser iterations per resolution level (regular-step
        gradient descent).
    shrink : sequence of int
        Shrink factor of each pyramid level, coarse to fine. Levels that would
        leave fewer than 8 voxels along the shortest axis of the working fixed
        image are dropped (factor 1 is always kept), and a full-resolution level
        (factor 1, no smoothing) is appended when the last kept one is not 1.
    smoothing_mm : sequence of float
        Gaussian smoothing sigma of each level, mm (paired with ``shrink``).
    seed : int
        Seed of the metric's sample jitter (any int >= 0; ITK gets ``seed + 1``
        because it reads 0 as "use the wall clock").
    threads : int
        Threads of the registration method; 1 (default) makes results
        reproducible (to floating-point summation order).
    max_rotation_deg : float
        A result rotating by more than this (degrees) is an error.
    max_shift_mm : float
        A result moving the centre of ``fixed``'s grid by more than this (mm) is
        an error.
    divergence_tol : float
        When the final mutual information is worse than the starting one by at
        most this fraction of the starting value, the starting transform is kept
        (``improved=False``); worse by more is an error.
    max_voxels : int
        Before the pyramid, ``fixed`` is average-shrunk (SimpleITK ``BinShrink``,
        the same integer factor on every axis) to at most this many voxels; 0
        disables that. ``moving`` is then average-shrunk per axis by
        ``floor(working fixed spacing / moving spacing)`` where that is 2 or
        more, to about the same spacing.

    Returns
    -------
    RegistrationResult
        The matrix (fixed LPS -> moving LPS) and diagnostics. The metric values
        are evaluated on the working (shrunk) images with the finest level's
        sampling; ``settings`` records ``bins``, ``prescale`` (``[k, [kx, ky,
        kz]]``: the fixed and moving shrink factors), the kept ``shrink`` and
        ``smoothing_mm`` levels, the ``sampling`` fraction per level, ``seed``
        and ``initialization`` (``"given"`` when ``initial`` was passed).

    Raises
    ------
    RegistrationError
        If either image is not 3D or has no affine; ``initialization`` is not
        ``"header"`` or ``"moments"``; SimpleITK fails while evaluating the
        metric or optimising (e.g. too few samples overlap); the mutual
        information ends worse than at the start by more than
        ``divergence_tol``; the matrix or final metric is not finite; or the
        result rotates more than ``max_rotation_deg`` or shifts more than
        ``max_shift_mm``. The error names ``modality``.
    """
    import SimpleITK as sitk

    name = modality or moving.modality
    for img in (fixed, moving):
        if img.affine is None or img.ndim != 3:
            raise RegistrationError("registration needs two 3D images with geometry", modality=name)
    try:
        init_mode = Initialization(initialization)
    except ValueError:
        raise RegistrationError(f"unknown initialization {initialization!r}; use 'header' or 'moments'",
                                modality=name) from None
    f = as_sitk(fixed, np.float32)
    m = as_sitk(moving, np.float32)
    # work at a bounded size: average-shrink the fixed image to at most max_voxels, and the
    # moving image to about the same physical spacing (cost then does not grow with the inputs)
    k = int(np.ceil((float(np.prod(fixed.shape)) / max_voxels) ** (1.0 / 3.0))) if max_voxels else 1
    if k > 1:
        f = sitk.BinShrink(f, [k, k, k])
    target = np.asarray(f.GetSpacing())
    km = [max(1, int(np.floor(t / s + 1e-6))) for t, s in zip(target, m.GetSpacing())]
    if max(km) > 1:
        m = sitk.BinShrink(m, km)
    center = grid_center(fixed.affine, fixed.shape)
    tx = sitk.Euler3DTransform()
    tx.SetCenter(center.tolist())
    if initial is not None:
        init = np.asarray(initial, dtype=np.float64)
        if init.shape != (4, 4) or not np.all(np.isfinite(init)):
            raise RegistrationError("initial must be a finite 4x4 matrix", modality=name)
        try:
            tx.SetMatrix(init[:3, :3].ravel().tolist(), 1e-4)
        except RuntimeError:  # ITK: "Attempting to set a non-orthogonal rotation matrix"
            raise RegistrationError("initial is not a rigid transform (its 3x3 part is not a rotation)",
                                    modality=name, hint="pass a rotation + translation matrix, or None") from None
        tx.SetTranslation((init[:3, 3] + init[:3, :3] @ center - center).tolist())
    elif init_mode is Initialization.MOMENTS:
        try:
            tx = sitk.Euler3DTransform(
                sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS))
        except RuntimeError:  # e.g. an image with no mass (all zeros) has no centre of mass
            raise RegistrationError(
                "the moments initialisation failed (an image without intensity mass?)", modality=name,
                hint="use initialization='header', or set register: none for this modality") from None
    f_shape = tuple(reversed(f.GetSize()))
    factors, sigmas = _levels(f_shape, shrink, smoothing_mm)
    n_vox = [float(np.prod([max(1, s // q) for s in f_shape])) for q in factors]
    fractions = [min(1.0, _SAMPLES_PER_LEVEL / v) for v in n_vox]

    itk_seed = int(seed) + 1  # SimpleITK reads seed 0 as "seed from the wall clock"

    def method(levels: bool):
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
        r.SetMetricSamplingStrategy(r.REGULAR)
        if levels:
            r.SetMetricSamplingPercentagePerLevel(fractions, itk_seed)
            r.SetShrinkFactorsPerLevel(factors)
            r.SetSmoothingSigmasPerLevel(sigmas)
            r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        else:
            r.SetMetricSamplingPercentage(fractions[-1], itk_seed)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=1e-3, numberOfIterations=int(iterations),
            relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetNumberOfThreads(int(threads))
        return r

    try:
        probe = method(False)
        probe.SetInitialTransform(tx, inPlace=False)
        metric_initial = float(probe.MetricEvaluate(f, m))
        reg = method(True)
        reg.SetInitialTransform(tx, inPlace=False)
        out = reg.Execute(f, m)
        probe = method(False)
        probe.SetInitialTransform(out, inPlace=False)
        metric_final = float(probe.MetricEvaluate(f, m))
    except RuntimeError as exc:  # ITK text may echo geometry; keep only the gist
        reason = "too few samples overlap" if "sample" in str(exc).lower() else type(exc).__name__
        raise RegistrationError(
            f"rigid registration failed ({reason})",
            modality=name,
            hint="the images barely overlap in world space; check the headers, try "
                 "initialization='moments', or set register: none for this modality",
        ) from None
    matrix = _matrix_of(out)
    improved = True
    if np.isfinite(metric_final) and metric_final > metric_initial:
        if metric_final <= metric_initial + divergence_tol * abs(metric_initial):
            # a plateau: the optimiser wandered without gain; keep where it started
            matrix = _matrix_of(tx)
            metric_final = metric_initial
            improved = False
        else:
            raise RegistrationError(
                f"rigid registration diverged: mutual information got worse "
                f"({metric_initial:.4f} -> {metric_final:.4f})",
                modality=name, hint="set register: none to keep the header alignment, or check the images")
    angle = rotation_angle_deg(matrix)
    shift = float(np.linalg.norm(apply_affine(matrix, center) - center))
    result = RegistrationResult(
        matrix, metric_initial, metric_final, angle, shift, int(reg.GetOptimizerIteration()),
        reg.GetOptimizerStopConditionDescription().split(".")[0][:80],
        {"bins": int(bins), "prescale": [k, km], "shrink": factors, "smoothing_mm": sigmas, "sampling": fractions,
         "seed": int(seed), "initialization": init_mode.value if initial is None else "given"},
        improved,
    )
    log.debug("registration %s: rotation %.2f deg, shift %.2f mm, metric %.4f -> %.4f",
              name, angle, shift, metric_initial, metric_final)
    if not np.isfinite(matrix).all() or not np.isfinite(metric_final):
        raise RegistrationError("rigid registration diverged (non-finite result)", modality=name)
    if angle > max_rotation_deg or shift > max_shift_mm:
        raise RegistrationError(
            f"rigid registration moved too far (rotation {angle:.1f} deg, shift {shift:.1f} mm; limits "
            f"{max_rotation_deg:g} deg, {max_shift_mm:g} mm)",
            modality=name, hint="the images may not show the same anatomy; check the pairing, or raise the limits")
    return result


def register_rigid(
    fixed: Image,
    moving: Image,
    *,
    modality: str | None = None,
    initialization: Initialization | str = Initialization.HEADER,
    initial: np.ndarray | None = None,
    seed: int = 0,
    threads: int = 1,
    max_rotation_deg: float = 45.0,
    max_shift_mm: float = 60.0,
    **options: Any,
) -> np.ndarray:
    """Find the rigid transform aligning ``moving`` to ``fixed``.

    Parameters
    ----------
    fixed : Image
        3D image that defines the space (e.g. the CT, or the CT on the study grid).
    moving : Image
        3D image to align (e.g. the MR).
    modality : str, optional
        Name used in errors (default ``moving.modality``).
    initialization : {"header", "moments"}
        Start from the headers' world alignment (identity) or from aligned
        centres of mass.
    initial : numpy.ndarray, optional
        4x4 starting matrix (fixed -> moving), overriding ``initialization``.
    seed : int
        Seed of the metric's sample jitter (any int >= 0; ITK gets ``seed + 1``
        because it reads 0 as "use the wall clock").
    threads : int
        Threads of the registration method; 1 (default) makes results
        reproducible (to floating-point summation order).
    max_rotation_deg, max_shift_mm : float
        A result beyond these is treated as divergence.
    **options
        ``max_voxels`` (400 000): the fixed image is average-shrunk (BinShrink)
        to at most this many voxels and the moving image to about the same
        spacing before the pyramid; ``divergence_tol`` (0.05): a final mutual information worse than the
        starting one by more than this fraction is divergence (error); a smaller
        loss keeps the starting transform.
        ``bins`` (32), ``iterations`` (200), ``shrink`` ((4, 2, 1)),
        ``smoothing_mm`` ((4, 2, 0)) -- see :func:`rigid_registration`.

    Returns
    -------
    numpy.ndarray
        4x4 float64 mapping LPS points of ``fixed`` to LPS points of ``moving``.
        Pass it as ``transform=`` to :func:`~medmulti.geometry.resample_to` to
        put ``moving`` on ``fixed``'s grid.

    Raises
    ------
    RegistrationError
        The optimiser failed (e.g. no overlap), the mutual information got
        clearly worse than at the start (more than ``divergence_tol``), or the
        result moved further than the limits; the error names the modality.

    Notes
    -----
    SimpleITK ``ImageRegistrationMethod``: Mattes mutual information (robust to
    different contrasts, so CT-MR works), an ``Euler3DTransform`` centred on the
    fixed image, regular-step gradient descent with scales from physical shift,
    a three-level pyramid (shrink 4/2/1, smoothing 4/2/0 mm; coarse levels
    dropped for small images) and about 40 000 metric samples per level, on
    images first average-shrunk to at most ``max_voxels`` (so a 128^3 study
    grid registers at about twice its spacing).
    """
    return rigid_registration(
        fixed, moving, modality=modality, initialization=initialization, initial=initial, seed=seed,
        threads=threads, max_rotation_deg=max_rotation_deg, max_shift_mm=max_shift_mm, **options,
    ).matrix
