"""The patient-keyed Keras dataset: ``({modality: batch}, labels)`` from a manifest.

:class:`PatientSequence` (alias :class:`MultiModalSequence`) is a
:class:`keras.utils.PyDataset`. It serves the rows admission admitted
(:func:`medmulti.manifest.admit`: header-level checks and the missing/corrupt
policies, one verdict per patient; ``train`` admits its splits once and hands
each sequence the verdicts), keeps the policies for faults found later (in the
shape probe, in :meth:`PatientSequence.fill_cache`, inside an epoch), and serves
fixed-shape batches read from the preprocessing cache (or preprocessed on the
fly) into preallocated arrays. See ``docs/sequence.md`` for the user guide.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import Counter
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from ..errors import CacheError, GeometryError, ManifestError, MedmultiError, MissingFileError
from ..manifest import Admission, Manifest, Problem, admit, load_manifest
from ..manifest.admission import MISSING_CHECKS, POLICIES
from ..spec import StudySpec, present_input_name
from ..study import preprocess as study_preprocess
from ..text import printable
from .augment import Augmenter
from .buffers import BufferPool
from .cache import PreprocessCache
from .cache_fill import preprocess_manifest
from .cache_key import entry_keys
from .context import name_error
from .tfdata import as_tf_dataset

__all__ = ["PatientSequence", "MultiModalSequence", "POLICIES"]

log = logging.getLogger("medmulti.data.sequence")

#: Patients named one by one in the skipped / zeroed warning; the rest are counted.
LISTED_PATIENTS = 20


def _placeholder(spec: StudySpec) -> np.ndarray:
    """The target served for a row without a label: the shape and dtype of an encoded label,
    and no class (zeros; ``-1`` for integer labels)."""
    if spec.labels.encoding == "int" and not spec.labels.multi_label:
        return np.asarray(-1, dtype=np.int64)
    return np.zeros(spec.labels.num_classes, np.float32)


def _listing(records: list, attribute: str) -> str:
    """``patient (modality: check)`` for the first records, then a count of the rest."""
    shown = [f"{key!r} ({modality or 'row'}: {reason.split(':', 1)[0]})" for key, modality, reason in
             records[:LISTED_PATIENTS]]
    more = len(records) - len(shown)
    return ", ".join(shown) + (f" and {more} more (see {attribute})" if more > 0 else "")


class PatientSequence(keras.utils.PyDataset):
    """Batches of co-registered, preprocessed modalities per patient, for ``model.fit``.

    Parameters
    ----------
    manifest : Manifest or str or PathLike
        A loaded :class:`~medmulti.manifest.Manifest` or the manifest CSV path.
    spec : StudySpec or str or PathLike
        The study spec or its YAML file.
    split : {"train", "val", "test"}
        Which rows to serve.
    batch_size : int
        Patients per batch. The last batch of an epoch holds the remainder
        (it is kept, so every patient is seen once per epoch).
    shuffle : bool, optional
        Shuffle patients every epoch (deterministically from ``seed`` and the
        epoch number). Default: ``True`` for ``"train"``, ``False`` otherwise.
    seed : int
        Seed for shuffling, class-balanced sampling and augmentation.
    augment : bool or Augmenter
        Augment (train split only): ``True`` uses ``Augmenter()`` defaults.
    on_missing, on_corrupt : {"error", "skip", "zeros"}
        What to do with a patient whose required input is missing
        (``missing_modality``/``missing_file``) or unusable (any other error from
        :func:`~medmulti.manifest.check_row`): raise the typed error now, exclude
        the patient (listed in :attr:`skipped`), or feed zeros for that input with
        ``"<name>_present" = 0``. Row-level problems (no modality) are handled as
        ``on_corrupt``, with ``"zeros"`` acting as ``"skip"`` for them; a patient
        also present in another split of the manifest is such a problem
        (``patient_in_two_splits``).
    cache_dir : str or PathLike or PreprocessCache, optional
        The preprocessing cache; ``None`` preprocesses on every read (slow).
    class_balance : bool
        Draw each epoch's patients with replacement, with probability inversely
        proportional to their class frequency (the epoch length is unchanged;
        then a patient may appear more than once, or not at all, per epoch).
    sample_weights : bool
        Also yield per-sample weights ``n / (k * count(class))`` (float32, ``(batch,)``).
    workers, use_multiprocessing, max_queue_size
        Passed to :class:`keras.utils.PyDataset`.
    progress : bool
        Show a progress bar while validating the patients.
    admission : Admission, optional
        Verdicts from :func:`~medmulti.manifest.admit` for this split under the
        same policies (``train`` admits every split at once); default: admit
        this split now.

    Raises
    ------
    MedmultiError
        With policy ``"error"``, the first problem found (typed, naming patient,
        modality and file); a split with no usable patients (``ManifestError``).
    ValueError
        Bad argument values (unknown policy, ``batch_size < 1``).

    Notes
    -----
    ``seq[i]`` returns ``(inputs, labels)`` or ``(inputs, labels, weights)``;
    ``inputs`` maps each spec modality name to float32 ``(batch, *spatial,
    channels)`` and each name in :attr:`optional_modalities` plus ``"_present"`` to
    float32 ``(batch, 1)``. Labels are ``spec.labels.encode(row.labels)`` stacked:
    float32 ``(batch, classes)`` (one-/multi-hot) or int64 ``(batch,)``. A row
    without a label (loaded with ``labels="optional"`` for ``predict``:
    :attr:`~medmulti.manifest.schema.ManifestRow.labeled` is False) gets a
    placeholder of the same shape and dtype, all zeros (``-1`` for ``int``), which
    only prediction may serve: it is no target.

    Which patients form batch ``i`` depends only on ``(seed, epoch, i)``; the epoch
    advances in :meth:`on_epoch_end`. Under ``skip``/``zeros`` batches also carry
    per-sample weights (:attr:`yields_weights`): a file that changes on disk
    after construction and no longer reads does not stop ``model.fit``; that
    patient is served as zeros with weight 0 (warned once, listed in
    :attr:`skipped` and :attr:`faulted`) and ``len`` never changes. Under
    ``error`` it raises its typed error at the batch.
    """

    def __init__(
        self,
        manifest: Any,
        spec: StudySpec | str | PathLike[str],
        split: str = "train",
        *,
        batch_size: int = 8,
        shuffle: bool | None = None,
        seed: int = 0,
        augment: bool | Augmenter = False,
        on_missing: str = "error",
        on_corrupt: str = "error",
        cache_dir: str | PathLike[str] | PreprocessCache | None = None,
        class_balance: bool = False,
        sample_weights: bool = False,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
        progress: bool = True,
        admission: Admission | None = None,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        for arg, value in (("on_missing", on_missing), ("on_corrupt", on_corrupt)):
            if value not in POLICIES:
                raise ValueError(f"{arg} must be one of {POLICIES}, got {value!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.spec = spec if isinstance(spec, StudySpec) else StudySpec.from_yaml(spec)
        if not isinstance(manifest, Manifest):
            manifest = load_manifest(manifest, self.spec, strict=False)
        self.manifest = manifest
        self._buffers = BufferPool()  # batch arrays, reused once nothing views them
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = (split == "train") if shuffle is None else bool(shuffle)
        self.seed = int(seed)
        if augment and split != "train":
            raise ValueError(f"augment is for the train split only; this sequence serves {split!r}")
        self.augmenter: Augmenter | None = (augment if isinstance(augment, Augmenter)
                                            else Augmenter() if augment else None)
        self.on_missing = on_missing
        self.on_corrupt = on_corrupt
        if cache_dir is None or isinstance(cache_dir, PreprocessCache):
            self.cache = cache_dir
        else:
            self.cache = PreprocessCache(cache_dir)
        self.class_balance = bool(class_balance)
        self.sample_weights = bool(sample_weights)
        self._epoch = 0
        self._orders: dict[int, np.ndarray] = {}

        zeros_policy = "zeros" in (on_missing, on_corrupt)
        self.optional_modalities: list[str] = [m.name for m in self.spec.modalities
                                               if not m.required or zeros_policy]
        self.input_names: list[str] = self.spec.names + [present_input_name(n) for n in self.optional_modalities]

        self.skipped: list[tuple[str, str | None, str]] = []
        self.zeroed: list[tuple[str, str, str]] = []
        self._faulted: dict[int, str] = {}  # row index -> reason, for faults met inside an epoch
        self._fault_lock = threading.Lock()
        if admission is None or not admission.covers([split], on_missing, on_corrupt):
            admission = admit(manifest, self.spec, splits=[split], on_missing=on_missing, on_corrupt=on_corrupt,
                              progress=progress, desc=f"checking {split} patients")
        self.admission = admission
        kept, present = self._take_verdicts(admission, manifest.split(split))
        self._set_rows(kept, present)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._spacing: dict[str, tuple[float, ...]] = {}
        self._probe_shapes()

    # -- construction helpers ----------------------------------------------------
    @staticmethod
    def _class_key(label: np.ndarray) -> Any:
        return int(label) if label.ndim == 0 else tuple(int(v) for v in label)

    def _set_rows(self, kept: list, present: list[dict[str, bool]]) -> None:
        """Serve these rows (before the first epoch: the length is fixed from then on)."""
        if not kept:
            raise ManifestError(f"no usable patients in the {self.split!r} split"
                                + (f" ({len({s[0] for s in self.skipped})} skipped)" if self.skipped else ""),
                                path=getattr(self.manifest, "path", None),
                                hint="see seq.skipped / `medmulti validate` for the problems")
        self._rows = kept
        self._present = present  # row index -> {name: bool}
        self._labels = [np.asarray(self.spec.labels.encode(r.labels)) if r.labeled else _placeholder(self.spec)
                        for r in kept]
        self._class_of = [self._class_key(lab) for lab in self._labels]
        counts = Counter(self._class_of)
        n, k = len(kept), len(counts)
        self._weights = np.array([n / (k * counts[c]) for c in self._class_of], np.float32)
        self._index = {r.key: i for i, r in enumerate(kept)}
        self._orders = {}

    def _take_verdicts(self, admission: Admission, rows: list) -> tuple[list, list[dict[str, bool]]]:
        """The admitted rows of this split and what each is fed; raise a refusal; log the rest."""
        kept, present = [], []
        for row in rows:
            v = admission.verdict(row.key)
            if v.status == "refused":
                raise v.error()
            if v.status == "skipped":
                for p in v.reasons:
                    self.skipped.append((row.key, p.modality, f"{p.check}: {p.message}"))
                continue
            for name, reason in v.zeroed:
                self.zeroed.append((row.key, name, reason))
            kept.append(row)
            present.append(dict(v.present))
        if self.skipped:
            log.warning("%s split: skipped %d of %d patients: %s", self.split,
                        len({s[0] for s in self.skipped}), len(rows), _listing(self.skipped, "seq.skipped"))
        if self.zeroed:
            log.warning("%s split: %d inputs fed as zeros: %s", self.split, len(self.zeroed),
                        _listing(self.zeroed, "seq.zeroed"))
        return kept, present

    def _policy_for(self, exc: MedmultiError, name: str | None) -> str:
        policy = self.on_missing if exc.check in MISSING_CHECKS else self.on_corrupt
        if policy == "zeros" and (name is None or name not in self.optional_modalities):
            policy = "skip"
        return policy

    def _fault_name(self, exc: MedmultiError, names: Sequence[str]) -> str | None:
        return exc.modality if exc.modality in self.spec.names else (names[0] if len(names) == 1 else None)

    def _zero_input(self, i: int, name: str, reason: str) -> None:
        """Feed input ``name`` of row ``i`` as zeros (and a non-reference 3D input without its reference)."""
        row = self._rows[i]
        self._present[i][name] = False
        self.zeroed.append((row.key, name, reason))
        ref = self.spec.reference
        if ref is not None and name == ref.name:
            for m in self.spec.modalities:
                if m.dims == 3 and m.name != ref.name and self._present[i][m.name]:
                    self._present[i][m.name] = False
                    self.zeroed.append((row.key, m.name, "no_reference: the reference modality is absent"))

    def apply_faults(self, problems: Sequence[Problem]) -> list[str]:
        """Apply the policies to faults found after admission (preprocessing, decoding), before training.

        Parameters
        ----------
        problems : sequence of Problem
            Error problems of served patients (by row key), e.g. the failures of
            :func:`~medmulti.data.cache_fill.preprocess_manifest` as problems.

        Returns
        -------
        list of str
            The row keys no longer served (skipped).

        Raises
        ------
        MedmultiError
            Under the ``"error"`` policy, the first fault's typed error.
        ManifestError
            No patient is left.
        """
        drop: set[int] = set()
        for p in problems:
            i = self._index.get(str(p.patient_id))
            if i is None or not p.is_error or i in drop:
                continue
            exc = p.to_error()
            name = p.modality if p.modality in self.spec.names else None
            policy = self._policy_for(exc, name)
            if policy == "error":
                raise exc
            if policy == "skip":
                drop.add(i)
                self.skipped.append((self._rows[i].key, name, f"{p.check}: {p.message}"))
            elif name is not None and self._present[i][name]:  # zeroed already (by admission): listed once
                self._zero_input(i, name, f"{p.check}: {p.message}")
        dropped = [self._rows[i].key for i in sorted(drop)]
        if drop:
            keep = [i for i in range(len(self._rows)) if i not in drop]
            log.warning("%s split: %d patient(s) skipped after preprocessing: %s", self.split, len(drop),
                        _listing([s for s in self.skipped if s[0] in set(dropped)], "seq.skipped"))
            self._set_rows([self._rows[i] for i in keep], [self._present[i] for i in keep])
        return dropped

    @property
    def yields_weights(self) -> bool:
        """True when batches are ``(inputs, labels, weights)``.

        With ``sample_weights=True``, and whenever a policy is ``"skip"`` or
        ``"zeros"``: a patient whose file fails inside an epoch is then served with
        a weight of 0 (all ones otherwise, unless ``sample_weights``).
        """
        return self.sample_weights or self.on_missing != "error" or self.on_corrupt != "error"

    @property
    def faulted(self) -> list[str]:
        """Row keys whose input failed inside an epoch: served as zeros with weight 0 since."""
        with self._fault_lock:
            return [self._rows[i].key for i in sorted(self._faulted)]

    def _probe_shapes(self) -> None:
        """Learn each modality's (spatial, channels) shape from the first patient that has it.

        A patient whose input fails here follows the policies (:meth:`apply_faults`):
        under ``skip`` it is no longer served, under ``zeros`` the input is zeroed.
        """
        todo = list(self.spec.names)
        i = 0
        while todo and i < len(self._rows):
            want = [n for n in todo if self._present[i][n]]
            if not want:
                i += 1
                continue
            try:
                loaded = self._load_patient(i, want, out=None)
            except MedmultiError as exc:
                name = self._fault_name(exc, want)
                key = self._rows[i].key
                problem = Problem.from_error(exc, patient_id=key, modality=name)
                if name is None or name not in want and not self._present[i].get(name, False):
                    problem = dataclasses.replace(problem, modality=None)  # nothing to zero: skip the row
                before = (len(self._rows), dict(self._present[i]))
                self.apply_faults([problem])
                if before == (len(self._rows), self._present[i]):
                    self.apply_faults([dataclasses.replace(problem, modality=None)])
                continue
            for n in want:
                arr, spacing = loaded[n]
                self._shapes[n] = tuple(arr.shape)
                self._spacing[n] = spacing
                todo.remove(n)
            i += 1
        for n in list(todo):
            shape = self._shape_from_spec(n)
            if shape is not None:
                self._shapes[n] = shape
                self._spacing[n] = ()
                todo.remove(n)
        for n in todo:
            m = self.spec.modality(n)
            raise MissingFileError(f"no patient in the {self.split!r} split has this input, so its shape is unknown",
                                   modality=n, hint="drop the modality from the spec or add patients that have it"
                                   if m.required else "give it to at least one patient of the split")

    def _shape_from_spec(self, name: str) -> tuple[int, ...] | None:
        """``(*spatial, channels)`` implied by the spec alone, or ``None`` when it does not fix it.

        Used only when no patient of the split has the input (all zeros). The
        spatial shape is the modality's own for 2D, the reference's for 3D; the
        channels are the number of CT windows, else 1. When another modality was
        probed, the reference grid it was read on wins.
        """
        m = self.spec.modality(name)
        ref = self.spec.reference
        if m.dims == 2:
            spatial = m.shape
        else:
            probed = [self._shapes[o.name][:-1] for o in self.spec.modalities
                      if o.dims == 3 and o.name in self._shapes]
            spatial = probed[0] if probed else (ref.shape if ref is not None else m.shape)
        if spatial is None:
            return None
        if m.kind == "ct":
            windows = m.intensity.get("windows", ["brain"])
            channels = 1 if isinstance(windows, str) else len(windows)
        else:
            channels = 1
        return (*spatial, channels)

    # -- reading -------------------------------------------------------------------
    def _sources(self, i: int) -> dict[str, Path | None]:
        row = self._rows[i]
        return {n: (row.sources.get(n) if self._present[i][n] else None) for n in self.spec.names}

    def _load_patient(self, i: int, names: Sequence[str],
                      out: Mapping[str, np.ndarray] | None) -> dict[str, tuple[np.ndarray, tuple[float, ...]]]:
        """Read modalities ``names`` of row ``i`` (from the cache, else preprocessing).

        Returns name -> (array, spacing); arrays are ``out[name]`` when given.
        """
        row = self._rows[i]
        sources = self._sources(i)
        result: dict[str, tuple[np.ndarray, tuple[float, ...]]] = {}
        keys: dict[str, str] = {}
        misses = []
        if self.cache is not None:
            keys = entry_keys(self.spec, names, sources, root=self.manifest.root, sha256=row.sha256)
        for n in names:
            if self.cache is not None:
                hit = self.cache.load(keys[n], out=None if out is None else out[n])
                if hit is not None:
                    result[n] = (hit.array, hit.spacing)
                    continue
            misses.append(n)
        if misses:
            try:
                computed = study_preprocess.preprocess_study(sources, self.spec, patient_id=row.key, only=list(misses))
            except MedmultiError as exc:
                raise self._contextualise(exc, i)
            for n in misses:
                pre = computed.get(n)
                if pre is None:
                    raise MissingFileError("the input could not be preprocessed (absent from the result)",
                                           patient_id=row.key, modality=n, path=row.paths.get(n))
                arr = np.asarray(pre.array, np.float32)
                spacing = tuple(float(v) for v in (pre.spacing or ()))
                if self.cache is not None:
                    self.cache.store(keys[n], arr, patient_id=row.key, modality=n, affine=pre.affine,
                                     spacing=spacing, meta=pre.meta,
                                     provenance={"source": row.paths.get(n), "spec": self.spec.modality(n).to_dict()})
                if out is not None:
                    self._check_shape(i, n, arr.shape)
                    out[n][...] = arr
                    arr = out[n]
                result[n] = (arr, spacing)
        for n in names:
            self._check_shape(i, n, result[n][0].shape)
        return result

    def _contextualise(self, exc: MedmultiError, i: int) -> MedmultiError:
        """Name the patient, the spec modality and the path relative to the manifest root."""
        present = [n for n in self.spec.names if self._present[i][n]]
        return name_error(exc, self._rows[i], self.spec, self.manifest.root, present)

    def _check_shape(self, i: int, name: str, shape: tuple[int, ...]) -> None:
        want = self._shapes.get(name)
        if want is not None and tuple(shape) != want:
            row = self._rows[i]
            raise GeometryError(f"the preprocessed input has shape {tuple(shape)} but this sequence's first patient "
                                f"gave {want}", patient_id=row.key, modality=name, path=row.paths.get(name),
                                hint="set 'shape' (and 'spacing_mm') for this modality in the spec so every "
                                     "patient lands on the same grid")

    # -- ordering --------------------------------------------------------------------
    def _order(self, epoch: int) -> np.ndarray:
        order = self._orders.get(epoch)
        if order is None:
            n = len(self._rows)
            rng = np.random.default_rng([self.seed, epoch])
            if self.class_balance:
                p = self._weights / self._weights.sum()
                order = rng.choice(n, size=n, replace=True, p=p)
            elif self.shuffle:
                order = rng.permutation(n)
            else:
                order = np.arange(n)
            if len(self._orders) > 4:
                self._orders.clear()
            self._orders[epoch] = order
        return order

    @property
    def epoch(self) -> int:
        """The current epoch number (0-based; advanced by :meth:`on_epoch_end`)."""
        return self._epoch

    @property
    def patient_ids(self) -> list[str]:
        """Patient keys in batch order for the current epoch."""
        return [self._rows[j].key for j in self._order(self._epoch)]

    @property
    def labels(self) -> list[np.ndarray]:
        """Encoded labels of the served patients, in manifest order (not batch order).

        Returns
        -------
        list of numpy.ndarray
            One per patient: a class index (single-label) or a 0/1 vector (multi-label).
        """
        return list(self._labels)

    @property
    def num_patients(self) -> int:
        """Patients served (after skipping)."""
        return len(self._rows)

    def __len__(self) -> int:
        return math.ceil(len(self._rows) / self.batch_size)

    def on_epoch_end(self) -> None:
        """Advance to the next epoch (new shuffle and augmentation draws)."""
        self._epoch += 1

    # -- batches ---------------------------------------------------------------------
    def element_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-input shape without the batch axis: ``(*spatial, channels)`` or ``(1,)`` for ``_present``."""
        out: dict[str, tuple[int, ...]] = {n: self._shapes[n] for n in self.spec.names}
        out.update({present_input_name(n): (1,) for n in self.optional_modalities})
        return out

    def label_shape(self) -> tuple[int, ...]:
        """Shape of one label: ``(classes,)`` or ``()`` for integer labels."""
        return tuple(self._labels[0].shape)

    def batch(self, epoch: int, index: int) -> tuple:
        """Return batch ``index`` of epoch ``epoch`` (a pure function of seed, epoch, index).

        Parameters
        ----------
        epoch : int
            Epoch number.
        index : int
            Batch index, ``0 <= index < len(self)``.

        Returns
        -------
        tuple
            ``(inputs, labels)`` or ``(inputs, labels, weights)``.

        Raises
        ------
        IndexError
            Out-of-range ``index``.
        MedmultiError
            A file that no longer reads (typed, naming patient, modality and file).
        """
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        rows = self._order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        b = len(rows)
        inputs: dict[str, np.ndarray] = {}
        for n in self.spec.names:
            inputs[n] = self._buffers.empty((b, *self._shapes[n]))
        for n in self.optional_modalities:
            inputs[present_input_name(n)] = np.zeros((b, 1), np.float32)
        weights = self._weights[rows].copy() if self.sample_weights else np.ones(b, np.float32)
        for j, i in enumerate(rows):
            for attempt in range(len(self.spec.names) + 2):  # each retry reads without one more zeroed input
                present = dict(self._present[i])
                gone = i in self._faulted
                have = [] if gone else [n for n in self.spec.names if present[n]]
                for n in self.spec.names:
                    if n not in have:
                        inputs[n][j] = 0.0
                for n in self.optional_modalities:
                    inputs[present_input_name(n)][j, 0] = 1.0 if n in have else 0.0
                if gone:
                    weights[j] = 0.0
                    break
                slots = {n: inputs[n][j] for n in have}
                try:
                    loaded = self._load_patient(int(i), have, out=slots)
                except MedmultiError as exc:
                    if not self.yields_weights:  # the "error" policies: raise, as the batch's typed error
                        raise
                    if self._fault_in_epoch(int(i), exc, have) and attempt < len(self.spec.names):
                        continue  # the input is zeroed from now on: read the patient again without it
                    with self._fault_lock:
                        if int(i) not in self._faulted:
                            self._faulted[int(i)] = f"{exc.check}: {exc.message}"
                            self.skipped.append((self._rows[i].key, exc.modality, self._faulted[int(i)]))
                    continue  # served as weight-0 zeros by the next pass of the loop
                if self.augmenter is not None and have:
                    rng = np.random.default_rng([self.seed, epoch, int(i), 1])
                    ref = self.spec.reference.name if self.spec.reference is not None else None
                    self.augmenter(slots, {n: loaded[n][1] for n in have}, rng, reference=ref)
                break
        labels = np.stack([self._labels[i] for i in rows])
        if self.yields_weights:
            return inputs, labels, weights
        return inputs, labels

    def _fault_in_epoch(self, i: int, exc: MedmultiError, names: Sequence[str]) -> bool:
        """A served patient's input failed inside an epoch (e.g. a file changed on disk).

        Under ``zeros`` (an input that is not required) the input is zeroed from then
        on and the patient is read again without it (returns True). Else the patient
        is served as zeros with weight 0 for the rest of training (``len`` cannot
        change while ``model.fit`` runs; returns False). Warned once per patient;
        listed in :attr:`skipped` / :attr:`zeroed`.
        """
        name = self._fault_name(exc, names)
        policy = self._policy_for(exc, name)
        if policy == "error":
            raise exc
        key = self._rows[i].key
        reason = f"{exc.check}: {exc.message}"
        with self._fault_lock:
            if i in self._faulted:
                return False
            served = policy == "zeros" and name is not None and self._present[i].get(name, False)
            if served:
                self._zero_input(i, str(name), reason)
                what = f"its {name} input is fed as zeros from now on"
            else:
                self._faulted[i] = reason
                self.skipped.append((key, name, reason))
                what = "it is served as zeros with weight 0 (left out) from now on"
        log.warning("%s split: patient %s, modality %s, file %s failed inside an epoch (%s); %s", self.split,
                    printable(key), printable(name or "-"), printable(exc.path or "-"), printable(reason), what)
        return bool(served)

    def __getitem__(self, index: int) -> tuple:
        return self.batch(self._epoch, int(index))

    def get_patient(self, patient_id: str) -> dict[str, np.ndarray]:
        """Return one patient's inputs, unbatched and not augmented.

        Parameters
        ----------
        patient_id : str
            The row key (``patient_id`` or ``patient_id/study_id``).

        Returns
        -------
        dict
            Input name -> float32 ``(*spatial, channels)``, and ``(1,)`` for ``_present``.

        Raises
        ------
        KeyError
            The patient is not served by this sequence (other split, or skipped).
        """
        if patient_id not in self._index:
            raise KeyError(f"patient {patient_id!r} is not in this {self.split!r} sequence"
                           + (" (it was skipped)" if any(s[0] == patient_id for s in self.skipped) else ""))
        i = self._index[patient_id]
        out = {n: np.zeros(self._shapes[n], np.float32) for n in self.spec.names}
        have = [n for n in self.spec.names if self._present[i][n]]
        self._load_patient(i, have, out={n: out[n] for n in have})
        for n in self.optional_modalities:
            out[f"{n}_present"] = np.array([1.0 if self._present[i][n] else 0.0], np.float32)
        return out

    def release_buffers(self) -> None:
        """Drop the reusable batch buffers this sequence keeps (up to 2 GiB).

        Batches already returned stay valid; later batches allocate again. The
        buffers are also freed when the sequence is.
        """
        self._buffers.clear()

    def fill_cache(self, *, workers: int | None = None, progress: bool = True) -> Any:
        """Preprocess this sequence's patients into its cache, in parallel processes.

        The first epoch then only reads: without this, a cold epoch preprocesses
        inside the batches, in Keras' worker threads, which keep fewer cores busy
        (``benchmarks/RESULTS.md``, "Feeding"). Entries already cached are kept;
        a killed fill resumes. A patient whose input fails to preprocess follows
        the policies (:meth:`apply_faults`): under ``skip`` it is no longer served
        (listed in :attr:`skipped`), under ``zeros`` an input that is not required
        is fed as zeros, under ``error`` its typed error is raised here.

        Parameters
        ----------
        workers : int, optional
            Processes (default: all CPU cores; ``0`` or ``1``: this process).
        progress : bool
            Show a progress bar.

        Returns
        -------
        PreprocessSummary
            What was computed, found cached, or failed.

        Raises
        ------
        CacheError
            The sequence has no cache (``cache_dir=None``).
        MedmultiError
            Under the ``"error"`` policy, the first failure's typed error.
        """
        if self.cache is None:
            raise CacheError("this sequence has no cache to fill", hint="build it with cache_dir=...")
        served = dataclasses.replace(self.manifest, rows=list(self._rows))
        summary = preprocess_manifest(served, self.spec, self.cache, workers=workers, progress=progress)
        self.apply_faults(summary.problems())
        return summary

    def as_tf_dataset(self, **kwargs: Any):
        """Return a ``tf.data.Dataset`` with the same elements (see :func:`medmulti.data.as_tf_dataset`)."""
        return as_tf_dataset(self, **kwargs)

    def __repr__(self) -> str:
        return (f"PatientSequence(split={self.split!r}, patients={len(self._rows)}, batch_size={self.batch_size}, "
                f"batches={len(self)}, inputs={self.input_names})")


#: The name used in DESIGN.md.
MultiModalSequence = PatientSequence
