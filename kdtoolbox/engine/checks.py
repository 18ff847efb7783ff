"""Checks of a student/teacher pair that distillers run once, when the model is built.

A distiller overrides :meth:`kdtoolbox.engine.BaseDistiller.check_models`; what it finds wrong
is raised before the first iteration, naming both models' values and the key to change.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

#: where detectors and classifiers keep their class count, in lookup order
HEAD_PATHS = ('bbox_head', 'roi_head.bbox_head', 'rpn_head', 'head', 'cls_head')


def num_classes_of(model: Any, heads: Sequence[str] = HEAD_PATHS) -> Optional[int]:
    """The ``num_classes`` of the first head of ``model`` found along ``heads`` (None if none)."""
    for path in heads:
        obj = model
        for part in path.split('.'):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and getattr(obj, 'num_classes', None) is not None:
            return int(obj.num_classes)
    if getattr(model, 'num_classes', None) is not None:
        return int(model.num_classes)
    return None


def require_same_num_classes(student: Any, teacher: Any, method: str,
                             heads: Sequence[str] = HEAD_PATHS) -> int:
    """Raise when the two models' class counts differ (response-level losses compare per class)."""
    s, t = num_classes_of(student, heads), num_classes_of(teacher, heads)
    if s is None or t is None:
        raise ValueError(f'{method}: cannot find num_classes on the {"student" if s is None else "teacher"} '
                         f'(looked at {", ".join(heads)})')
    if s != t:
        raise ValueError(f'{method} compares class scores, but the student has {s} classes and the teacher '
                         f'{t}: set the same num_classes in both heads (student.*.num_classes / '
                         f'teacher config), or distil features only')
    return s
