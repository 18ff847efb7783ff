"""DistillationModel: the mmengine ``BaseModel`` that the runner trains.

One training step (``mode='loss'``):

1. the runner's ``train_step`` runs the student's data preprocessor once;
2. the teacher runs in eval mode under ``no_grad`` with its recorders, only as far as needed;
3. the student's own ``loss()`` runs with its recorders; its task losses come back as usual;
4. the distiller turns (student records, teacher records, context) into losses, in fp32;
5. the dict merges ``loss_*`` from the student with ``distill.<name>.loss_*`` from the distiller,
   scaled by ``distill_loss_scale`` (set by :class:`DistillLossScheduleHook`).

``predict`` and ``tensor`` modes are the student alone. The teacher is held outside the module
tree: it is not in ``state_dict()`` (checkpoints hold the student and the distiller's learnable
parts), not seen by DDP or the optimizer, but it follows ``.to()`` / ``.cuda()``.
"""
from __future__ import annotations

import copy
from typing import Any, Optional, Union

import torch
import torch.distributed as dist
from mmengine.model import BaseModel

from ..registry import DISTILLERS, MODELS
from .builder import build_model
from .context import DistillContext
from .guards import POLICIES, guarded_update
from .recorder import Recorder
from .teacher import TeacherRunner, build_teacher, input_device_type

#: who preprocesses the teacher's batch: the student's preprocessor, or the teacher's own
TEACHER_PREPROCESSORS = ('student', 'teacher')


def _to_fp32(value: Any) -> Any:
    """Cast floating tensors (also inside tuples/lists/dicts) to float32: losses run in fp32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_fp32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_fp32(v) for k, v in value.items()}
    return value


@MODELS.register_module()
class DistillationModel(BaseModel):
    """A student trained with a frozen teacher through a distiller.

    Args:
        student: the student's model dict, config path (``'mmdet::...'`` works) or Config.
        teacher: the teacher's model dict, config path or Config.
        distiller: a distiller config (``DISTILLERS``), e.g. ``dict(type='FitNet', ...)``.
        teacher_checkpoint: the teacher's weights (a file, or a work dir whose latest checkpoint is
            used), loaded on CPU. None leaves the teacher
            randomly initialised (a warning says so): only for smoke tests.
        teacher_strict: load the teacher checkpoint strictly (missing or unexpected keys fail).
        teacher_mode: the mode of the teacher's forward ('tensor' or 'loss').
        truncate_teacher: stop the teacher after its last recorded top-level module.
        data_preprocessor: defaults to the student's own.
        teacher_preprocessor: which data preprocessor makes the teacher's batch. ``'student'``
            (default): the teacher gets the student's preprocessed batch. ``'teacher'``: the
            teacher's own (from its config, e.g. its own voxel size and point-cloud range, or its
            own normalisation) runs on the same raw batch, so both see the same augmented data.
        nonfinite_loss: 'raise' (stop with the loss and iteration named) or 'skip' (no update for
            that step) when a training loss is NaN/Inf; see :mod:`kdtoolbox.engine.guards`.
        teacher_autocast: the teacher's precision under mixed precision. None (default): the
            student's autocast context (``--amp``: bf16 on CPU, fp16 on CUDA); False: fp32 even
            under ``--amp``; True / 'bfloat16' / 'float16': autocast even when the student trains
            in fp32. The records reach the distiller in fp32 whatever this is.
    """

    def __init__(self, student: Union[dict, str], teacher: Union[dict, str], distiller: dict,
                 teacher_checkpoint: Optional[str] = None, teacher_strict: bool = True,
                 teacher_mode: str = 'tensor', truncate_teacher: bool = True,
                 data_preprocessor: Optional[dict] = None, nonfinite_loss: str = 'raise',
                 teacher_preprocessor: str = 'student', teacher_autocast: Union[None, bool, str] = None,
                 init_cfg: Optional[dict] = None):
        if nonfinite_loss not in POLICIES:
            raise ValueError(f'DistillationModel: nonfinite_loss must be one of {POLICIES}, got {nonfinite_loss!r}')
        if teacher_preprocessor not in TEACHER_PREPROCESSORS:
            raise ValueError(f'DistillationModel: teacher_preprocessor must be one of {TEACHER_PREPROCESSORS}, '
                             f'got {teacher_preprocessor!r}')
        self.teacher_preprocessor = teacher_preprocessor
        student_model = build_model(student, 'student')
        if data_preprocessor is None:
            data_preprocessor = getattr(student_model, 'data_preprocessor', None)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = student_model
        self.nonfinite_loss = nonfinite_loss
        self.distiller = DISTILLERS.build(distiller, where='distiller')
        # Outside the module tree on purpose (see the module docstring).
        object.__setattr__(self, 'teacher', build_teacher(teacher, teacher_checkpoint, teacher_strict))
        if teacher_preprocessor == 'teacher' and getattr(self.teacher, 'data_preprocessor', None) is None:
            raise ValueError("DistillationModel: teacher_preprocessor='teacher' but the teacher model "
                             'has no data_preprocessor (set one in the teacher config)')
        self.distiller.check_models(self.student, self.teacher)
        self.student_recorder = Recorder(self.student, self.distiller.student_recorders, 'student')
        teacher_recorder = Recorder(self.teacher, self.distiller.teacher_recorders, 'teacher')
        self.teacher_runner = TeacherRunner(self.teacher, teacher_recorder, teacher_mode, truncate_teacher,
                                            autocast=teacher_autocast)
        #: multiplies every distillation loss; 0 skips the teacher pass entirely
        self.distill_loss_scale = 1.0

    # --- the teacher follows device moves and stays in eval mode --------------------------
    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.teacher._apply(fn)
        return self

    def _set_device(self, device: torch.device) -> None:
        # BaseModel.to()/cuda() tell the data preprocessors in the module tree their device; the
        # teacher's own preprocessor (teacher_preprocessor='teacher') is outside that tree.
        super()._set_device(device)
        if hasattr(self.teacher, '_set_device'):
            self.teacher._set_device(device)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    # --- one training step, guarded against non-finite losses ----------------------------------
    def train_step(self, data: Any, optim_wrapper) -> dict:
        with optim_wrapper.optim_context(self):
            data = self.preprocess(data, True)
            losses = self._run_forward(data, mode='loss')
        parsed_loss, log_vars = self.parse_losses(losses)
        return guarded_update(parsed_loss, log_vars, optim_wrapper, self.nonfinite_loss)

    def preprocess(self, data: dict, training: bool = True) -> dict:
        """The student's preprocessed batch (``inputs``, ``data_samples``), plus ``teacher_batch``
        (the teacher's own preprocessing of the same raw batch) when ``teacher_preprocessor='teacher'``.

        The teacher's preprocessor runs first, on copies of the data samples: preprocessors write
        into them (batch shapes, voxel maps), and the student's must not see the teacher's values.
        """
        if self.teacher_preprocessor != 'teacher':
            return self.data_preprocessor(data, training)
        teacher_data = dict(data)
        if 'data_samples' in data:
            teacher_data['data_samples'] = copy.deepcopy(data['data_samples'])
        with torch.no_grad():
            teacher_batch = self.teacher.data_preprocessor(teacher_data, training)
        student_batch = self.data_preprocessor(data, training)
        return dict(student_batch, teacher_batch=teacher_batch)

    # --- forward -----------------------------------------------------------------------------
    def forward(self, inputs: Any, data_samples: Optional[list] = None, mode: str = 'tensor',
                teacher_batch: Optional[dict] = None):
        if mode == 'loss':
            return self.loss(inputs, data_samples, teacher_batch)
        if mode in ('predict', 'tensor'):
            return self.student(inputs, data_samples, mode=mode)
        raise ValueError(f"DistillationModel: invalid mode {mode!r}: expected 'loss', 'predict' or 'tensor'")

    def loss(self, inputs: Any, data_samples: Optional[list] = None,
             teacher_batch: Optional[dict] = None) -> dict:
        """Student losses plus ``distill.*`` losses. ``teacher_batch``: the teacher's own
        preprocessed batch (see :meth:`preprocess`); None: the teacher sees ``inputs``."""
        scale = float(self.distill_loss_scale)
        if scale == 0.0:  # distillation switched off (warm-up / stopped): the student alone
            return self._touch_distiller(dict(self.student.loss(inputs, data_samples)))
        if teacher_batch is None:
            teacher_records = self.teacher_runner(inputs, data_samples)
        else:
            teacher_records = self.teacher_runner(teacher_batch['inputs'], teacher_batch.get('data_samples'))
        with self.student_recorder:
            losses = dict(self.student.loss(inputs, data_samples))
        context = DistillContext.from_batch(inputs, data_samples)
        context.student, context.teacher = self.student, self.teacher
        student_records = self.student_recorder.records()
        # fp32, autocast off: sum-reduced feature losses over large maps overflow fp16
        with torch.autocast(device_type=input_device_type(inputs), enabled=False):
            distill_losses = self.distiller(student_records.with_transform(_to_fp32),
                                            teacher_records.with_transform(_to_fp32), context)
        self.student_recorder.clear()
        self.teacher_runner.recorder.clear()
        for key, value in distill_losses.items():
            full_key = f'distill.{key}'
            if full_key in losses:
                raise KeyError(f'distiller output {full_key!r} collides with a student loss')
            losses[full_key] = value * scale if 'loss' in key else value
        return self._touch_distiller(losses)

    def _touch_distiller(self, losses: dict) -> dict:
        """Under DDP (world size > 1), add ``distill.loss_ddp_zero`` = 0 x (every trainable
        distiller parameter), so that DDP's reducer sees all of them in every step (warm-up steps
        with the distiller off, a term a batch does not produce) and ``find_unused_parameters``
        can stay False. It adds exact zeros to the gradients; single-process runs skip it."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return losses
        params = [p for p in self.distiller.parameters() if p.requires_grad]
        if params:
            losses['distill.loss_ddp_zero'] = sum(p.sum() for p in params) * 0.0
        return losses
