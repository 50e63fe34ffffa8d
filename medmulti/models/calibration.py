"""Probability calibration: temperature scaling and the reliability diagram.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017)
divides the model's logits by one scalar ``T > 0`` fitted to minimise the negative
log-likelihood on the validation split. It changes how confident the probabilities are,
never their order within a patient: the argmax (single-label) and every decision at 0.5
(multi-label) stay the same.

The fusion model outputs probabilities (softmax or sigmoid), so the logits are recovered
from them: ``log p`` for softmax (the logits up to a per-patient constant, which softmax
ignores), ``log p - log(1 - p)`` for sigmoid. One temperature serves every class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from os import PathLike
from typing import Any, Mapping, Sequence

import numpy as np

from ..text import printable
from .metrics import label_matrix
from .plots import LITERAL_TEXT, literal_legend

__all__ = ["TemperatureScaling", "fit_temperature", "apply_temperature", "negative_log_likelihood",
           "plot_reliability", "TEMPERATURE_RANGE"]

#: Temperatures the fit searches (and a stored calibration may hold).
TEMPERATURE_RANGE = (0.05, 20.0)

_EPS = 1e-12


def _logits(p: np.ndarray, multi_label: bool) -> np.ndarray:
    q = np.clip(p, _EPS, 1.0 - _EPS) if multi_label else np.clip(p, _EPS, 1.0)
    return np.asarray(np.log(q) - np.log1p(-q) if multi_label else np.log(q), np.float64)


def apply_temperature(probabilities: Any, temperature: float, *, multi_label: bool = False) -> np.ndarray:
    """Rescale probabilities as if the logits had been divided by ``temperature``.

    Parameters
    ----------
    probabilities : array_like, shape (n, k)
        Softmax (single-label) or sigmoid (multi-label) outputs.
    temperature : float
        ``T > 1`` softens, ``T < 1`` sharpens, 1 leaves them (up to clipping at 1e-12).
    multi_label : bool
        Sigmoid outputs.

    Returns
    -------
    numpy.ndarray
        float64, shape (n, k); rows sum to 1 for single-label outputs.

    Examples
    --------
    >>> apply_temperature([[0.2, 0.8]], 2.0).round(4).tolist()
    [[0.3333, 0.6667]]
    """
    from scipy.special import expit, softmax

    z = _logits(np.asarray(probabilities, np.float64), multi_label) / float(temperature)
    return np.asarray(expit(z) if multi_label else softmax(z, axis=1), np.float64)


def negative_log_likelihood(y_true: Any, probabilities: Any, *, multi_label: bool = False) -> float:
    """Mean negative log-likelihood (cross-entropy) per patient; per decision for multi-label.

    Parameters
    ----------
    y_true : array_like
        Class indices, one-hot or multi-hot (see :func:`~medmulti.models.metrics.label_matrix`).
    probabilities : array_like, shape (n, k)
    multi_label : bool

    Returns
    -------
    float
    """
    p = np.asarray(probabilities, np.float64)
    y = label_matrix(y_true, p.shape[1], multi_label=multi_label).astype(bool)
    q = np.clip(p, _EPS, 1.0 - _EPS)
    if multi_label:
        return float(-np.where(y, np.log(q), np.log1p(-q)).mean())
    return float(-np.log(q[y]).mean())


@dataclass(frozen=True)
class TemperatureScaling:
    """A fitted temperature and how it was fitted.

    Attributes
    ----------
    temperature : float
        Divides the logits.
    multi_label : bool
        Sigmoid (True) or softmax (False) outputs.
    fitted_on : str
        The split it was fitted on (``"val"``).
    n : int
        Patients it was fitted on.
    nll_before, nll_after : float
        Mean negative log-likelihood on that split before and after scaling.
    """

    temperature: float
    multi_label: bool = False
    fitted_on: str = "val"
    n: int = 0
    nll_before: float | None = None
    nll_after: float | None = None

    def apply(self, probabilities: Any) -> np.ndarray:
        """:func:`apply_temperature` with this temperature."""
        return apply_temperature(probabilities, self.temperature, multi_label=self.multi_label)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``method: "temperature"``."""
        return {"method": "temperature", **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TemperatureScaling":
        """Read :meth:`to_dict`'s output (untrusted: every field is checked).

        Raises
        ------
        ValueError
            Not a temperature record, or a temperature outside :data:`TEMPERATURE_RANGE`.
        """
        if not isinstance(data, Mapping) or data.get("method") != "temperature":
            raise ValueError("not a temperature-scaling record")
        t = data.get("temperature")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
                TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]):
            raise ValueError(f"the temperature must be a number in {list(TEMPERATURE_RANGE)}")
        nll = [data.get(k) if isinstance(data.get(k), (int, float)) and not isinstance(data.get(k), bool) else None
               for k in ("nll_before", "nll_after")]
        n = data.get("n")
        return cls(float(t), bool(data.get("multi_label", False)), str(data.get("fitted_on", "val")),
                   n if isinstance(n, int) and not isinstance(n, bool) else 0, *nll)


def fit_temperature(y_true: Any, probabilities: Any, *, multi_label: bool = False,
                    fitted_on: str = "val") -> TemperatureScaling:
    """Fit the temperature minimising :func:`negative_log_likelihood`.

    Parameters
    ----------
    y_true : array_like
        Labels of the fitting split (class indices, one-hot or multi-hot).
    probabilities : array_like, shape (n, k)
        The model's uncalibrated outputs on that split.
    multi_label : bool
    fitted_on : str
        Recorded name of the split.

    Returns
    -------
    TemperatureScaling

    Notes
    -----
    A bounded one-dimensional search over ``log T`` (:func:`scipy.optimize.minimize_scalar`,
    T in :data:`TEMPERATURE_RANGE`); the NLL is convex in ``1/T``, so its minimum is unique.
    """
    from scipy.optimize import minimize_scalar

    p = np.asarray(probabilities, np.float64)
    y = label_matrix(y_true, p.shape[1], multi_label=multi_label)
    if not p.shape[0]:
        raise ValueError("no patients to fit a temperature on")

    def nll(log_t: float) -> float:
        return negative_log_likelihood(y, apply_temperature(p, math.exp(log_t), multi_label=multi_label),
                                       multi_label=multi_label)

    bounds = (math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1]))
    best = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    t = float(math.exp(best.x))
    return TemperatureScaling(t, multi_label, fitted_on, int(p.shape[0]),
                              negative_log_likelihood(y, p, multi_label=multi_label), float(best.fun))


def plot_reliability(curves: Mapping[str, Mapping[str, Sequence[Any]]], path: str | PathLike[str], *,
                     title: str = "") -> None:
    """Draw a reliability diagram: observed frequency against mean predicted probability per bin,
    and below it how many patients each bin holds.

    Parameters
    ----------
    curves : Mapping
        Name -> :func:`~medmulti.models.metrics.calibration_bins` (as the ``curves`` of
        :func:`~medmulti.models.metrics.calibration_metrics`).
    path : str or PathLike
        The PNG to write.
    title : str
        Figure title (drawn literally).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfectly calibrated")
    for name, bins in curves.items():
        edges = np.asarray(bins["edges"], np.float64)
        keep = [i for i, c in enumerate(bins["count"]) if c]
        top.plot([bins["mean_predicted"][i] for i in keep], [bins["fraction_positive"][i] for i in keep],
                 marker="o", ms=4, label=printable(name))
        bottom.stairs(np.asarray(bins["count"], np.float64), edges, alpha=0.5)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed frequency")
    top.set_title("reliability")
    top.grid(alpha=0.3)
    literal_legend(top, loc="upper left", fontsize="small")
    bottom.set_xlabel("mean predicted probability")
    bottom.set_ylabel("patients")
    if title:
        fig.suptitle(printable(title), **LITERAL_TEXT)
    fig.savefig(path, dpi=100)
