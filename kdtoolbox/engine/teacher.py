"""The teacher: built from a config, loaded from a checkpoint on CPU, frozen, and truncated.

Truncation: the teacher's forward is stopped right after the last of its top-level submodules
that holds a recorded module has returned (raising :class:`_TeacherDone` from a forward hook),
so e.g. a teacher whose neck is recorded never runs its head (``tools/benchmark.py`` prints the
truncated and the full teacher forward side by side).

Mixed precision: the teacher runs in the caller's autocast context (the student's, under
``--amp``) unless ``autocast`` says otherwise: ``False`` runs it in fp32, ``'bfloat16'`` /
``'float16'`` / ``True`` (the device's default: bf16 on CPU, fp16 on CUDA) run it under autocast
even when the student trains in fp32 (a cheaper teacher). Its records are cast to fp32 before the
distiller sees them (DistillationModel).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from contextlib import nullcontext
from typing import Any, Optional, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

from .amp import AUTOCAST_DTYPES  # (importing amp registers kdtoolbox.AutocastOptimWrapper)
from .builder import build_model
from .recorder import Recorder, common_top_level


class _TeacherDone(Exception):
    """Raised by a hook once every recorded part of the teacher has run."""


def resolve_checkpoint(path: str, key: str = 'teacher_checkpoint', hint: str = 'train the teacher first') -> str:
    """A checkpoint file, or a work dir whose latest checkpoint (mmengine's ``last_checkpoint``) is
    used; errors name the config ``key`` and say what to do (``hint``)."""
    if os.path.isdir(path):
        latest = find_latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f'{key}: the directory {path!r} holds no checkpoint '
                                    f'(no last_checkpoint file): {hint}')
        return latest
    if '://' not in path and not os.path.isfile(path):
        raise FileNotFoundError(f'{key}: no checkpoint at {path!r} ({hint})')
    return path


def _read_state_dict(path: str) -> dict:
    """The model weights of a checkpoint file (``state_dict`` or a bare dict), ``module.`` stripped."""
    try:
        ckpt = _load_checkpoint(path, map_location='cpu')
    except Exception as exc:  # noqa: BLE001  (unreadable: say which file)
        raise RuntimeError(f'teacher_checkpoint {path!r} cannot be read: {type(exc).__name__}: {exc}') from exc
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise RuntimeError(f'teacher_checkpoint {path!r} holds no state_dict')
    metadata = getattr(state, '_metadata', None)
    return _with_metadata({_strip_module(k): v for k, v in state.items()},
                          None if metadata is None else {_strip_module(k): v for k, v in metadata.items()})


def _strip_module(key: str) -> str:
    """A key of a DDP-wrapped model's state dict without its ``module.``/``module`` prefix."""
    return key[len('module.'):] if key.startswith('module.') else '' if key == 'module' else key


def _with_metadata(state: dict, metadata: Optional[dict]) -> 'OrderedDict':
    """``state`` as an OrderedDict carrying ``metadata`` as its ``_metadata`` (per-module state-dict
    versions, keyed by module path).

    ``load_state_dict`` hands each module its version from it: modules whose stored layout changed
    between versions convert old checkpoints when the version is absent. mmdet3d's spconv 2 layers do
    (they permute kernels saved by mmcv's spconv 1), so a state dict rebuilt without the metadata
    gets its sparse-conv kernels permuted into the wrong shape."""
    out = OrderedDict(state)
    if metadata is not None:
        out._metadata = OrderedDict(metadata)
    return out


def describe_key_mismatch(expected: dict, found: dict, shown: int = 5) -> str:
    """'' when ``found`` fits ``expected``; else how many keys are missing / unexpected / of
    another shape, with the first ``shown`` of each named."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f'{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}' for k in expected
              if k in found and hasattr(found[k], 'shape') and tuple(found[k].shape) != tuple(expected[k].shape)]

    def part(what, keys):
        more = f', ... ({len(keys) - shown} more)' if len(keys) > shown else ''
        return f'{len(keys)} {what} ({", ".join(keys[:shown])}{more})'
    parts = [part(w, k) for w, k in (('missing keys', missing), ('unexpected keys', unexpected),
                                      ('keys of another shape (checkpoint vs config)', shapes)) if k]
    return '; '.join(parts)


def build_teacher(cfg: Any, checkpoint: Optional[str], strict: bool = True) -> nn.Module:
    """Build, load (``map_location='cpu'``) and freeze a teacher model."""
    teacher = build_model(cfg, 'teacher')
    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint)
        state = _read_state_dict(checkpoint)
        problems = describe_key_mismatch(teacher.state_dict(), state)
        if problems and strict:
            raise RuntimeError(f'teacher_checkpoint {checkpoint!r} does not fit the teacher config: '
                               f'{problems}. Check that the teacher config is the one the checkpoint was '
                               f'trained with (depth, widths, num_classes), or set teacher_strict=False '
                               f'to load what fits.')
        if problems:
            print_log(f'teacher_checkpoint {checkpoint!r}: {problems} (teacher_strict=False)',
                      logger='current', level=logging.WARNING)
        expected = teacher.state_dict()
        fitting = _with_metadata({k: v for k, v in state.items() if k in expected
                                  and tuple(v.shape) == tuple(expected[k].shape)}, getattr(state, '_metadata', None))
        teacher.load_state_dict(fitting, strict=False)
    else:  # no init_weights(): a model-zoo config would download pretrained backbone weights
        print_log('teacher_checkpoint is None: the teacher keeps its random initial weights',
                  logger='current', level=logging.WARNING)
    teacher._is_init = True  # a later init_weights() must not overwrite the loaded weights
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def _first_tensor(value: Any) -> Optional[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def input_device_type(inputs: Any) -> str:
    """The device type ('cpu', 'cuda') of the first tensor in ``inputs`` (a tensor, or lists /
    tuples / dicts of them, e.g. mmdet3d's ``{'points': [...], 'voxels': {...}}``); 'cpu' if none."""
    tensor = _first_tensor(inputs)
    return 'cpu' if tensor is None else tensor.device.type


#: accepted values of ``TeacherRunner(autocast=...)`` / ``DistillationModel(teacher_autocast=...)``
TEACHER_AUTOCAST = (None, False, True, 'bfloat16', 'float16')


def teacher_autocast_context(setting: Union[None, bool, str], device_type: str):
    """The context the teacher runs in: the caller's (None), fp32 (False), or autocast in a dtype
    (True: bf16 on CPU, fp16 elsewhere; or 'bfloat16' / 'float16')."""
    if setting is None:
        return nullcontext()
    if setting is False:
        return torch.autocast(device_type=device_type, enabled=False)
    if setting is True:
        dtype = torch.bfloat16 if device_type == 'cpu' else torch.float16
    else:
        dtype = AUTOCAST_DTYPES[setting]
    return torch.autocast(device_type=device_type, dtype=dtype)


class TeacherRunner:
    """Runs a frozen teacher under ``no_grad`` with its recorder, stopping as early as possible.

    Args:
        teacher: the frozen teacher model (an mmengine BaseModel).
        recorder: the teacher's :class:`Recorder`.
        mode: the mode the teacher's forward is called in ('tensor' runs no loss and no
            post-processing; 'loss' when a distiller records something only the loss path computes).
        truncate: stop after the last recorded top-level module.
        autocast: the teacher's precision (see the module docstring): None follows the caller's
            autocast context, False runs fp32, True / 'bfloat16' / 'float16' run under autocast.
    """

    def __init__(self, teacher: nn.Module, recorder: Recorder, mode: str = 'tensor', truncate: bool = True,
                 autocast: Union[None, bool, str] = None):
        if autocast not in TEACHER_AUTOCAST:
            raise ValueError(f'teacher_autocast must be one of {TEACHER_AUTOCAST}, got {autocast!r}')
        self.teacher = teacher
        self.recorder = recorder
        self.mode = mode
        self.autocast = autocast
        self._pending: set[str] = set()
        self._running = False
        self.stop_modules: list[str] = []
        #: False runs the whole forward (hooks stay registered): for measuring what truncation saves
        self.truncate = truncate
        tops = common_top_level(recorder.module_paths()) if truncate else None
        if tops:
            self.stop_modules = tops
            for top in tops:  # registered after the recorder's hooks, so records come first
                teacher.get_submodule(top).register_forward_hook(self._make_stop_hook(top))

    def _make_stop_hook(self, top: str):
        def hook(module, inputs, output):
            if not (self._running and self.truncate):
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
            with self.recorder, teacher_autocast_context(self.autocast, input_device_type(inputs)):
                try:
                    self.teacher(inputs, data_samples, mode=self.mode)
                except _TeacherDone:
                    pass
        finally:
            self._running = False
        return self.recorder.records()
