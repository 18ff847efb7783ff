"""Checks of a distillation config run before the first training iteration.

``add_preflight_hook(cfg)`` (called by tools/train.py for every config) adds :class:`PreflightHook`
to a config whose model is a :class:`~kdtoolbox.engine.DistillationModel`; other configs are left
as they are. At ``before_train`` (after checkpoint loading and resume) the hook takes one batch of
the training data set (``dataset[0:batch_size]``, collated by the train dataloader's own
``collate_fn``) and runs :func:`run_preflight` on it:

1. the model's own preprocessing, the teacher with its recorders and the student's ``loss()`` with
   its recorders, under ``no_grad``;
2. every recorder must have fired (but those in the distiller's ``optional_records``): one error
   lists those that did not, each with its module;
3. a scratch copy of the distiller runs once on those records (a distiller that changes its own
   state in ``forward``, e.g. EMA teachers or memory banks, starts training untouched); if it
   fails, the feature pairs whose shapes do not meet (:meth:`BaseDistiller.feature_pairs`) are
   named with both shapes and the adapter / config key to add, else the distiller's own error is
   reported.

Nothing of this touches training: the batch is read from the data set directly (the train
dataloader's iterator is not advanced), the random-number states (Python, numpy, torch, CUDA) are
put back afterwards, and so are the model's buffers (BatchNorm statistics).
"""
from __future__ import annotations

import copy
import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS
from .context import DistillContext
from .recorder import RecordError, Records

HOOK_TYPE = 'kdtoolbox.PreflightHook'


class PreflightError(RuntimeError):
    """A distillation config that cannot train, found on one batch before the first iteration."""


def is_distillation_config(model_cfg: Any) -> bool:
    """Whether a config's ``model`` is a DistillationModel (by its ``type``)."""
    model_type = model_cfg.get('type') if hasattr(model_cfg, 'get') else None
    if isinstance(model_type, str):
        return model_type.split('.')[-1] == 'DistillationModel'
    from .model import DistillationModel
    return isinstance(model_type, type) and issubclass(model_type, DistillationModel)


def add_preflight_hook(cfg) -> None:
    """Add :class:`PreflightHook` to ``cfg.custom_hooks`` (distillation configs only; idempotent)."""
    if not is_distillation_config(cfg.get('model') or {}):
        return
    hooks = list(cfg.get('custom_hooks') or [])
    if any(isinstance(h, dict) and str(h.get('type', '')).split('.')[-1] == 'PreflightHook' for h in hooks):
        return
    hooks.append(dict(type=HOOK_TYPE))
    cfg.custom_hooks = hooks


# --- state that the check must leave as it found it ---------------------------------------------
@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Put Python's, numpy's, torch's and every CUDA device's generator back on exit."""
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextmanager
def preserved_buffers(module: torch.nn.Module) -> Iterator[None]:
    """Put the module's buffers (BatchNorm running statistics, counters) back on exit."""
    saved = {name: buf.detach().clone() for name, buf in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])


# --- the check --------------------------------------------------------------------------------------
def _unfired(records: Records, owner: str, optional: tuple = (), owner_hint: str = '') -> list[str]:
    problems = []
    for name in records:
        if f'{owner}.{name}' in optional:
            continue
        try:
            records.calls(name)
        except RecordError as exc:
            problems.append(f'{exc}{owner_hint}')
    return problems


def _shapes(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_shapes(v) for v in value) + ']'
    return type(value).__name__


def _scratch_copy(distiller):
    """A deep copy of the distiller to run on the preflight batch: distillers may change their own
    state in ``forward`` (EMA teachers, memory banks, first-batch normalisers, flags), and the real
    first iteration must find it untouched. None if it cannot be copied (then it is not run)."""
    try:
        return copy.deepcopy(distiller)
    except Exception:  # noqa: BLE001  (an attribute that cannot be copied: skip this part of the check)
        return None


def _feature_pairs(distiller, student: Records, teacher: Records) -> list:
    """The distiller's feature pairs; none when they cannot be formed (a record that an optional
    recorder did not produce): they only explain a failure."""
    try:
        return list(distiller.feature_pairs(student, teacher))
    except RecordError:
        return []


def _record_shapes(records: Records, name: str) -> str:
    try:
        return _shapes(records.get_call(name, 0))
    except RecordError:
        return '(not recorded)'


def collect_records(model, data: dict) -> tuple[Records, Records, DistillContext]:
    """One training step's records without the update: preprocessing, the teacher with its
    recorders, the student's ``loss()`` with its recorders (all under ``no_grad``)."""
    with torch.no_grad():
        batch = model.preprocess(data, True)
        inputs, samples = batch['inputs'], batch.get('data_samples')
        teacher_batch = batch.get('teacher_batch')
        if teacher_batch is None:
            teacher_records = model.teacher_runner(inputs, samples)
        else:
            teacher_records = model.teacher_runner(teacher_batch['inputs'], teacher_batch.get('data_samples'))
        with model.student_recorder:
            model.student.loss(inputs, samples)
    context = DistillContext.from_batch(inputs, samples)
    context.student, context.teacher = model.student, model.teacher
    return model.student_recorder.records(), teacher_records, context


def run_preflight(model, data: dict) -> dict:
    """Check a DistillationModel on one raw batch (what the train dataloader yields).

    Raises :class:`PreflightError` naming what is wrong. Returns a summary
    (``student_records``, ``teacher_records``, ``pairs``) for the log. The caller keeps the random
    state and the buffers (see :class:`PreflightHook`).
    """
    from .model import _to_fp32
    student, teacher, context = collect_records(model, data)
    try:
        teacher_hint = ''
        if getattr(model.teacher_runner, 'mode', 'tensor') == 'tensor':
            teacher_hint = (" (the teacher runs in 'tensor' mode: a module that only its loss() calls needs "
                            "model.teacher_mode='loss')")
        optional = tuple(getattr(model.distiller, 'optional_records', ()))
        problems = _unfired(student, 'student', optional) + _unfired(teacher, 'teacher', optional, teacher_hint)
        if problems:
            raise PreflightError('a recorder never fired on one training batch:\n  ' + '\n  '.join(problems))
        distiller = _scratch_copy(model.distiller)
        if distiller is None:
            return dict(student_records=len(student), teacher_records=len(teacher), pairs=0)
        student32, teacher32 = student.with_transform(_to_fp32), teacher.with_transform(_to_fp32)
        with torch.no_grad():
            try:
                distiller(student32, teacher32, context)
            except Exception as exc:  # noqa: BLE001  (explained below, the cause chained)
                pairs = _feature_pairs(distiller, student32, teacher32)
                mismatches = [p for p in (pair.problem() for pair in pairs) if p]
                name = type(distiller).__name__
                if mismatches:
                    raise PreflightError(
                        f'{name}: teacher and student features do not meet:\n  ' + '\n  '.join(mismatches) +
                        f'\n(the distiller failed on one training batch with {type(exc).__name__}: {exc})') from exc
                records = '; '.join([f'student {n!r} {_record_shapes(student, n)}' for n in student] +
                                    [f'teacher {n!r} {_record_shapes(teacher, n)}' for n in teacher])
                raise PreflightError(f'{name} failed on one training batch before the first iteration: '
                                     f'{type(exc).__name__}: {exc}\n(records: {records})') from exc
            pairs = _feature_pairs(distiller, student32, teacher32)
        return dict(student_records=len(student), teacher_records=len(teacher), pairs=len(pairs))
    finally:
        model.student_recorder.clear()
        model.teacher_runner.recorder.clear()


def first_batch(dataloader) -> dict:
    """``dataset[0:batch_size]`` collated like the dataloader does, without touching its iterator."""
    dataset = dataloader.dataset
    # a DataLoader built with a batch_sampler (mmdet's AspectRatioBatchSampler) has batch_size None
    size = getattr(dataloader, 'batch_size', None) or getattr(dataloader.batch_sampler, 'batch_size', None) or 1
    size = min(int(size), len(dataset))
    return dataloader.collate_fn([dataset[i] for i in range(size)])


@HOOKS.register_module()
class PreflightHook(Hook):
    """Runs :func:`run_preflight` on one batch at ``before_train`` (after loading and resume),
    leaving the random states, the model's buffers and the dataloader as they were."""

    priority = 'LOW'  # after the hooks that set the model up (RandomStateHook restores at VERY_LOW)

    def before_train(self, runner) -> None:
        from .model import DistillationModel
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(model, DistillationModel):
            return
        dataloader = runner.train_dataloader
        if len(dataloader.dataset) == 0:
            return
        with preserved_random_state(), preserved_buffers(model):
            summary = run_preflight(model, first_batch(dataloader))
        runner.logger.info(f'preflight: {summary["student_records"]} student and {summary["teacher_records"]} '
                           f'teacher records fired on one batch, {summary["pairs"]} feature pair(s), '
                           f'the distiller ran')
