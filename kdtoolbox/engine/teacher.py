"""The teacher: built from a config, loaded from a checkpoint on CPU, frozen, and truncated.

Truncation: the teacher's forward is stopped right after the last of its top-level submodules
that holds a recorded module has returned (raising :class:`_TeacherDone` from a forward hook),
so e.g. a teacher whose neck is recorded never runs its head.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint, load_checkpoint

from .builder import build_model
from .recorder import Recorder, common_top_level


class _TeacherDone(Exception):
    """Raised by a hook once every recorded part of the teacher has run."""


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a work dir whose latest checkpoint (mmengine's ``last_checkpoint``) is used."""
    if os.path.isdir(path):
        latest = find_latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f'teacher_checkpoint: the directory {path!r} holds no checkpoint '
                                    f'(no last_checkpoint file): train the teacher first')
        return latest
    if '://' not in path and not os.path.isfile(path):
        raise FileNotFoundError(f'teacher_checkpoint: no checkpoint at {path!r}')
    return path


def build_teacher(cfg: Any, checkpoint: Optional[str], strict: bool = True) -> nn.Module:
    """Build, load (``map_location='cpu'``) and freeze a teacher model."""
    teacher = build_model(cfg, 'teacher')
    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint)
        try:
            load_checkpoint(teacher, checkpoint, map_location='cpu', strict=strict,
                            revise_keys=[(r'^module\.', '')])
        except RuntimeError as exc:  # name the file and the key: mmengine's message names neither
            raise RuntimeError(f'teacher_checkpoint {checkpoint!r} does not fit the teacher config '
                               f'(teacher_strict={strict}): {exc}') from exc
    else:  # no init_weights(): a model-zoo config would download pretrained backbone weights
        print_log('teacher_checkpoint is None: the teacher keeps its random initial weights',
                  logger='current', level=logging.WARNING)
    teacher._is_init = True  # a later init_weights() must not overwrite the loaded weights
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


class TeacherRunner:
    """Runs a frozen teacher under ``no_grad`` with its recorder, stopping as early as possible.

    Args:
        teacher: the frozen teacher model (an mmengine BaseModel).
        recorder: the teacher's :class:`Recorder`.
        mode: the mode the teacher's forward is called in ('tensor' runs no loss and no
            post-processing; 'loss' when a distiller records something only the loss path computes).
        truncate: stop after the last recorded top-level module.
    """

    def __init__(self, teacher: nn.Module, recorder: Recorder, mode: str = 'tensor', truncate: bool = True):
        self.teacher = teacher
        self.recorder = recorder
        self.mode = mode
        self._pending: set[str] = set()
        self._running = False
        self.stop_modules: list[str] = []
        tops = common_top_level(recorder.module_paths()) if truncate else None
        if tops:
            self.stop_modules = tops
            for top in tops:  # registered after the recorder's hooks, so records come first
                teacher.get_submodule(top).register_forward_hook(self._make_stop_hook(top))

    def _make_stop_hook(self, top: str):
        def hook(module, inputs, output):
            if not self._running:
                return
            self._pending.discard(top)
            if not self._pending:
                raise _TeacherDone
        return hook

    @torch.no_grad()
    def __call__(self, inputs: Any, data_samples: Any):
        """Run the teacher; return its :class:`Records`."""
        self._pending = set(self.stop_modules)
        self._running = True
        try:
            with self.recorder:
                try:
                    self.teacher(inputs, data_samples, mode=self.mode)
                except _TeacherDone:
                    pass
        finally:
            self._running = False
        return self.recorder.records()
