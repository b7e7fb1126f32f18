"""The segmentation audit: Dice, HD95 and lesion detection of a segmenter (and its pipelines) under attack.

``medrobust audit`` and :func:`medrobust.audit` run it when the config says ``task: segmentation``
or the model card's task is segmentation (:mod:`.dispatch`). The parts mirror the classifier
audit: :mod:`.config` (the typed YAML), :mod:`.planning` (cells attack × budget × target × threat
and their keys), :mod:`.targets` (the segmenter and ``denoiser → segmenter`` pipelines),
:mod:`.runner` (run folder, lock, resumable state, cells), :mod:`.results` (typed results),
:mod:`.gate` (gates on Dice, HD95, detection) and :mod:`.report` (HTML/Markdown with overlays).

>>> from medrobust.evaluation.segmentation import run_segmentation_audit, load_segmentation_config
>>> cfg = load_segmentation_config("pipelines/segmentation_chest_xray.yaml")   # doctest: +SKIP
>>> results = run_segmentation_audit(cfg, "runs/seg-audit")                    # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.utils.lazy import lazy_attributes

_LAZY = {
    "SegmentationAuditConfig": "medrobust.evaluation.segmentation.config",
    "load_segmentation_config": "medrobust.evaluation.segmentation.config",
    "run_segmentation_audit": "medrobust.evaluation.segmentation.runner",
    "SegmentationAuditResults": "medrobust.evaluation.segmentation.results",
    "DefendedSegmenter": "medrobust.evaluation.segmentation.targets",
    "parse_segmentation_gate": "medrobust.evaluation.segmentation.gate",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
