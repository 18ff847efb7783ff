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

    Optional methods a distiller may override (all have working defaults):

    - :meth:`check_models`: refuse a student/teacher pair when the model is built;
    - :meth:`feature_pairs`: which student and teacher features must meet (same shape after the
      distiller's adapters). The preflight check (:mod:`kdtoolbox.engine.preflight`) runs one
      training batch before the first iteration; when the distiller fails on it, the pairs whose
      shapes do not meet are named with both shapes and what to add;
    - :meth:`visual_maps`: the maps ``tools/visualize.py`` draws, with this convention:

      * ``'NAME' -> Tensor [H, W] or [B, H, W]``: a map (a mask, an attention). When the model's
        input is an image batch and NAME does not start with ``'bev/'``, the map covers the padded
        batch input (``context.batch_input_shape``, like an FPN grid) and is drawn over the image,
        upsampled with nearest; otherwise (``'bev/...'``, or point-cloud / multi-view inputs) it is
        drawn on its own as a heatmap, row 0 at the top.
      * ``'NAME.points' -> Tensor [P, 2]`` (x = column, y = row, in cells of the map ``NAME``;
        the first image) or ``[P, 3]`` (batch index, x, y): points (e.g. BEV keypoints, box
        centres) drawn as dots over the map ``NAME``; an integer coordinate is a cell's centre
        (``kdtoolbox.visualize.metric_to_points`` / ``flat_index_points`` convert metres / flat
        indices).
    """

    #: record names ('student.NAME' / 'teacher.NAME') that may legitimately stay empty on a batch
    #: (e.g. the RoI head's inputs when no RoI was sampled): the preflight check does not require them
    optional_records: tuple = ()

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

    def feature_pairs(self, student: Records, teacher: Records) -> list['FeaturePair']:
        """The student/teacher features that must meet, from one forward's records.

        Default: every record name declared on both sides; a tensor value is one pair, a
        tuple/list of tensors (FPN levels) one pair per level (as many as both sides have),
        without adapters. Override to add the distiller's adapters (``FeaturePair.student_adapter``)
        or to leave out records that are not compared element-wise.
        """
        pairs = []
        for name in self.student_recorders:
            if name not in self.teacher_recorders:
                continue
            s, t = student.get_call(name, 0), teacher.get_call(name, 0)
            pairs.extend(FeaturePair.from_values(name, name, s, t))
        return pairs

    def visual_maps(self, student: Records, teacher: Records, context: DistillContext) -> dict[str, torch.Tensor]:
        """Maps worth looking at (masks, attention), keyed by name; see the class docstring for
        the convention. Default: none."""
        return {}


def _shape(value: Any) -> tuple:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


@dataclass
class FeaturePair:
    """A student feature that has to meet a teacher feature (same shape, batch aside), after the
    optional adapters.

    Attributes:
        student_name, teacher_name: how the two features are named in messages
            (``"'features'[2]"``).
        student, teacher: the recorded tensors ``[N, C, ...]``.
        student_adapter, teacher_adapter: modules applied to each side first (or None);
            ``student_adapter_key`` / ``teacher_adapter_key`` name them in the config.
        where: the config key of the consumer (``'distiller.losses.p3'``), or ''.
    """
    student_name: str
    teacher_name: str
    student: torch.Tensor
    teacher: torch.Tensor
    student_adapter: Optional[nn.Module] = None
    teacher_adapter: Optional[nn.Module] = None
    student_adapter_key: str = ''
    teacher_adapter_key: str = ''
    where: str = ''

    @classmethod
    def from_values(cls, student_name: str, teacher_name: str, s: Any, t: Any, **kwargs) -> list['FeaturePair']:
        """One pair for two tensors, one per level for two tuples/lists of tensors, none otherwise."""
        if isinstance(s, torch.Tensor) and isinstance(t, torch.Tensor):
            return [cls(repr(student_name), repr(teacher_name), s, t, **kwargs)]
        if isinstance(s, (list, tuple)) and isinstance(t, (list, tuple)):
            return [cls(f'{student_name!r}[{i}]', f'{teacher_name!r}[{i}]', a, b, **kwargs)
                    for i, (a, b) in enumerate(zip(s, t))
                    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)]
        return []

    def problem(self) -> Optional[str]:
        """None when the two sides meet; else what differs, both shapes named, and what to add."""
        where = f'{self.where}: ' if self.where else ''
        s_desc = f'student {self.student_name} {_shape(self.student)}'
        t_desc = f'teacher {self.teacher_name} {_shape(self.teacher)}'
        s, t = self.student, self.teacher
        with torch.no_grad():
            for side, adapter, key in (('student', self.student_adapter, self.student_adapter_key),
                                       ('teacher', self.teacher_adapter, self.teacher_adapter_key)):
                if adapter is None:
                    continue
                value, other = (s, t) if side == 'student' else (t, s)
                try:
                    value = apply_adapter(adapter, value, other)
                except Exception as exc:  # noqa: BLE001  (the adapter does not fit the feature)
                    return (f'{where}{s_desc} vs {t_desc}: the {side} adapter {key or type(adapter).__name__} '
                            f'cannot take the {side} feature ({type(exc).__name__}: {exc}); set its input '
                            f'channels to {_shape(value)[1] if len(_shape(value)) > 1 else "?"}')
                if side == 'student':
                    s_desc += f' -> {key or type(adapter).__name__} -> {_shape(value)}'
                    s = value
                else:
                    t_desc += f' -> {key or type(adapter).__name__} -> {_shape(value)}'
                    t = value
        ss, ts = _shape(s), _shape(t)
        if ss[1:] == ts[1:]:
            return None
        if len(ss) != len(ts) or len(ss) < 2:
            return f'{where}{s_desc} and {t_desc} differ in rank: record comparable tensors'
        fixes = []
        if ss[1] != ts[1]:
            fixes.append(f'they differ in channels ({ss[1]} vs {ts[1]}): add a channel adapter '
                         f'(e.g. dict(type=\'ConvAdapter\', in_channels={ss[1]}, out_channels={ts[1]}) in '
                         f'distiller.adapters, or the distiller\'s student_channels={ss[1]} / '
                         f'teacher_channels={ts[1]})')
        if ss[2:] != ts[2:]:
            fixes.append(f'they differ in size ({"x".join(map(str, ss[2:]))} vs {"x".join(map(str, ts[2:]))}): '
                         f'add dict(type=\'ResizeAdapter\') after the student\'s adapter, or record '
                         f'modules of the same stride')
        return f'{where}{s_desc} and {t_desc} do not meet: ' + '; '.join(fixes)


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

    def feature_pairs(self, student: Records, teacher: Records) -> list[FeaturePair]:
        """One pair per loss with exactly one student and one teacher input, through its adapters."""
        pairs = []
        for name, refs in self.loss_inputs.items():
            s_refs = [r for r in refs.values() if r.source == 'student']
            t_refs = [r for r in refs.values() if r.source == 'teacher']
            if len(s_refs) != 1 or len(t_refs) != 1:
                continue
            s_ref, t_ref = s_refs[0], t_refs[0]
            s_val, t_val = self._raw(s_ref, student, teacher), self._raw(t_ref, student, teacher)
            if not (isinstance(s_val, torch.Tensor) and isinstance(t_val, torch.Tensor)):
                continue

            def label(ref):
                return repr(ref.record) + (f'[{ref.index}]' if ref.index is not None else '') + \
                    (f' (call {ref.call})' if ref.call else '')
            pairs.append(FeaturePair(
                label(s_ref), label(t_ref), s_val, t_val,
                student_adapter=self.adapters[s_ref.adapter] if s_ref.adapter else None,
                teacher_adapter=self.adapters[t_ref.adapter] if t_ref.adapter else None,
                student_adapter_key=f'distiller.adapters.{s_ref.adapter}' if s_ref.adapter else '',
                teacher_adapter_key=f'distiller.adapters.{t_ref.adapter}' if t_ref.adapter else '',
                where=f'distiller.losses.{name}'))
        return pairs

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
