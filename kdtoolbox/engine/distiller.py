"""Distillers: turn student and teacher records into a dict of losses.

:class:`BaseDistiller` is what method plugins subclass: declare what to record (module paths of
the student and of the teacher), own any learnable parts (adapters, GcBlocks, tokens) as
submodules, and implement :meth:`BaseDistiller.forward`.

:class:`ConfigurableDistiller` wires recorded features through adapters into registered losses
from a config alone::

    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(p3='neck.fpn_convs.0.conv'),
        teacher_recorders=dict(p3='neck.fpn_convs.0.conv'),
        adapters=dict(p3=dict(type='ConvAdapter', in_channels=128, out_channels=256)),
        losses=dict(p3=dict(type='FeatureMSELoss', loss_weight=1.0,
                            inputs=dict(student=dict(record='student.p3', adapter='p3'),
                                        teacher='teacher.p3'))))

An input is ``'student.NAME'`` / ``'teacher.NAME'`` or a dict with ``record`` and optionally
``call`` (which call of a module run several times, default 0), ``index`` (an element of a
tuple/list output, e.g. one FPN level of ``neck``) and ``adapter`` (applied to the value; the
adapter's ``forward`` may take ``target=`` to get the other side's tensor, e.g. to resize to it).
A loss whose ``forward`` has a ``context`` parameter also receives the :class:`DistillContext`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..adapters import AdapterSequence, apply_adapter
from ..registry import ADAPTERS, DISTILLERS, LOSSES
from .context import DistillContext
from .recorder import Records


class BaseDistiller(BaseModule):
    """Base of every distiller.

    Args:
        student_recorders: record name -> module path of the student (or a dict with ``module``
            and ``io``); see :class:`kdtoolbox.engine.recorder.RecordSpec`.
        teacher_recorders: the same for the teacher. The teacher runs only as far as the last of
            its top-level modules that hold a recorded module.
    """

    def __init__(self, student_recorders: Optional[Mapping[str, Any]] = None,
                 teacher_recorders: Optional[Mapping[str, Any]] = None,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg)
        self.student_recorders = dict(student_recorders or {})
        self.teacher_recorders = dict(teacher_recorders or {})

    def check_models(self, student: nn.Module, teacher: nn.Module) -> None:
        """Called once when the DistillationModel is built, before any iteration: raise on a pair
        this distiller cannot work with (e.g. :func:`kdtoolbox.engine.checks.require_same_num_classes`)."""

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict[str, torch.Tensor]:
        """Return losses keyed ``'<name>.loss_<what>'`` (the model prefixes ``distill.``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class InputRef:
    """Where one loss argument comes from."""
    source: str  # 'student' | 'teacher'
    record: str
    call: int = 0
    index: Optional[int] = None
    adapter: Optional[str] = None

    @classmethod
    def parse(cls, spec: Union[str, Mapping], where: str) -> 'InputRef':
        if isinstance(spec, str):
            spec = {'record': spec}
        if not isinstance(spec, Mapping) or 'record' not in spec:
            raise KeyError(f"{where}: expected 'student.NAME', 'teacher.NAME' or a dict with 'record'")
        unknown = set(spec) - {'record', 'call', 'index', 'adapter'}
        if unknown:
            raise KeyError(f'{where}: unknown keys {sorted(unknown)} (allowed: record, call, index, adapter)')
        source, _, name = str(spec['record']).partition('.')
        if source not in ('student', 'teacher') or not name:
            raise ValueError(f"{where}: record must be 'student.NAME' or 'teacher.NAME', got {spec['record']!r}")
        return cls(source=source, record=name, call=int(spec.get('call', 0)),
                   index=spec.get('index'), adapter=spec.get('adapter'))


def _accepts(fn: Any, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


@DISTILLERS.register_module()
class ConfigurableDistiller(BaseDistiller):
    """Any recorded features, through optional adapters, into any registered losses.

    Args:
        student_recorders, teacher_recorders: see :class:`BaseDistiller`.
        adapters: adapter name -> adapter config (``ADAPTERS``) or a list of configs (chained).
        losses: loss name -> loss config (``LOSSES``, or an mmdet/mmengine loss) plus ``inputs``:
            forward-argument name -> input reference (see the module docstring).
    """

    def __init__(self, student_recorders: Mapping[str, Any], teacher_recorders: Mapping[str, Any],
                 losses: Mapping[str, Mapping], adapters: Optional[Mapping[str, Any]] = None,
                 init_cfg=None):
        super().__init__(student_recorders, teacher_recorders, init_cfg=init_cfg)
        self.adapters = nn.ModuleDict({
            name: build_adapter(cfg, where=f'distiller.adapters.{name}')
            for name, cfg in (adapters or {}).items()})
        self.losses = nn.ModuleDict()
        self.loss_inputs: dict[str, dict[str, InputRef]] = {}
        self._loss_wants_context: dict[str, bool] = {}
        for name, cfg in losses.items():
            where = f'distiller.losses.{name}'
            cfg = dict(cfg)
            inputs = cfg.pop('inputs', None)
            if not inputs:
                raise KeyError(f"{where}: missing 'inputs' (forward argument -> 'student.NAME' / 'teacher.NAME')")
            loss = LOSSES.build(cfg, where=where)
            refs = {arg: InputRef.parse(ref, f'{where}.inputs.{arg}') for arg, ref in inputs.items()}
            for arg, ref in refs.items():
                if not _accepts(loss.forward, arg):
                    params = [p for p in inspect.signature(loss.forward).parameters]
                    raise TypeError(f'{where}.inputs.{arg}: {type(loss).__name__}.forward has no '
                                    f'argument {arg!r} (it takes {params})')
                recorders = self.student_recorders if ref.source == 'student' else self.teacher_recorders
                if ref.record not in recorders:
                    raise KeyError(f'{where}.inputs.{arg}: no {ref.source} recorder named {ref.record!r} '
                                   f'(declared: {sorted(recorders)})')
                if ref.adapter is not None and ref.adapter not in self.adapters:
                    raise KeyError(f'{where}.inputs.{arg}: no adapter named {ref.adapter!r} '
                                   f'(declared: {sorted(self.adapters)})')
            self.losses[name] = loss
            self.loss_inputs[name] = refs
            self._loss_wants_context[name] = 'context' in inspect.signature(loss.forward).parameters

    def _raw(self, ref: InputRef, student: Records, teacher: Records) -> Any:
        value = (student if ref.source == 'student' else teacher).get_call(ref.record, ref.call)
        if ref.index is not None:
            value = value[ref.index]
        return value

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, loss in self.losses.items():
            refs = self.loss_inputs[name]
            raw = {arg: self._raw(ref, student, teacher) for arg, ref in refs.items()}
            kwargs = {}
            for arg, ref in refs.items():
                value = raw[arg]
                if ref.adapter is not None:
                    adapter = self.adapters[ref.adapter]
                    # the other side's tensor, for adapters that resize to it
                    other = next((raw[a] for a, r in refs.items() if r.source != ref.source), None)
                    value = apply_adapter(adapter, value, other)
                kwargs[arg] = value
            if self._loss_wants_context[name]:
                kwargs['context'] = context
            result = loss(**kwargs)
            if isinstance(result, Mapping):
                out.update({f'{name}.{k}': v for k, v in result.items()})
            else:
                out[f'{name}.loss'] = result
        return out


def build_adapter(cfg: Any, where: str) -> nn.Module:
    """One adapter config, or a list of them chained in order."""
    if isinstance(cfg, (list, tuple)):
        return AdapterSequence([build_adapter(c, f'{where}[{i}]') for i, c in enumerate(cfg)])
    return ADAPTERS.build(cfg, where=where)
