"""XKD's cross-modal distillation and domain alignment (Sarkar & Etemad, AAAI 2024; pritamqu/XKD).

Two students, the video student (the DistillationModel's student) and an audio student owned by
this distiller (``audio_model``), each with a DINO projection head ``h`` (MLP ``D -> hidden ->
hidden -> bottleneck`` with GELU, L2 normalisation, then a weight-normalised ``Linear(bottleneck,
out_dim)`` without bias whose norm is fixed to 1: DINO's ``norm_last_layer``). The teachers are
EMAs of the same-modality student and head (``video_teacher``, ``audio_teacher``,
``video_head_ema``, ``audio_head_ema``), run in eval mode without gradients:

- EMA: ``theta_t <- m theta_t + (1 - m) theta_s`` with ``m`` on a cosine schedule from ``m0`` to
  ``m1`` (0.997 -> 1) over ``total_iters`` (default: the runner's ``max_iters``; constant ``m0`` if
  unknown); floating buffers (BatchNorm statistics) are copied. The update runs at the start of
  each training step (so it sees the weights of the previous optimizer step); the first step copies
  the students into the teachers;
- cross-modal KD (``DINOLossX``), per direction, with the centre ``c`` of the teacher's outputs::

      L(s, t) = mean_i sum_k -softmax((t_i - c) / tau_t)_k log softmax(s_i / tau_s)_k
      c <- mu c + (1 - mu) mean_i t_i        (after the loss, mu = 0.9)

  video teacher -> audio student (``tau_t`` = 0.1) and audio teacher -> video student
  (``tau_t`` = 0.07), both with ``tau_s`` = 0.1; ``L_cmkd`` is their mean;
- domain alignment: ``L_align = (MMD(h_v(s_v), h_a(s_a)) + MMD(h_v'(t_v), h_a'(t_a))) / 2``
  (:func:`kdtoolbox.losses.mmd.mmd_loss`, Gaussian kernels with ``gamma = 1e-3 .. 1e3``; the teacher
  term carries no gradient, as officially).

Returned: ``xkd.loss_cmkd = cmkd_weight * L_cmkd``, ``xkd.loss_align = align_weight * L_align``
and, when ``audio_cls_weight > 0``, ``xkd.loss_audio_cls`` (CE of the audio student's head, so that
the audio student can also be evaluated). The video student's own CE comes from the student model.

Out of scope / deviations: the masked reconstruction pretraining (MAE, weight 5 in the official
``(align + cmkd + 5 recon) / 7``) and the attention-based refinement of teacher tokens; XKD's ViT
encoders are replaced by this plugin's networks (the teachers' pooled ``neck`` features feed the
heads instead of the patch mean); one global and no local views; the losses are returned as
separate weighted terms instead of one normalised sum.

Config: the DistillationModel's ``teacher`` is :class:`~kdtoolbox_plugins.av.models.NullTeacher`
(XKD has no external teacher) and ``video_model`` repeats the student's model dict (the EMA copy is
built from it, so it is part of the checkpoint)::

    student = dict(type='R2Plus1D', num_classes=51)
    model = dict(type='DistillationModel', student=student, teacher=dict(type='NullTeacher'),
                 distiller=dict(type='XKD', video_model=student,
                                audio_model=dict(type='LogMelAudioCNN', embed_dim=512)))
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.losses.mmd import DEFAULT_GAMMAS, mmd_loss
from kdtoolbox.registry import MODELS

from .models import gt_labels


class DINOHead(nn.Module):
    """MLP -> L2 normalise -> ``Linear(bottleneck, out_dim, bias=False)`` with unit-norm rows."""

    def __init__(self, in_dim: int, out_dim: int = 8192, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'DINOHead: num_layers must be >= 1, got {num_layers}')
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_weight = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_weight, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_weight, dim=1))


def cross_modal_dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor,
                          student_temp: float = 0.1, teacher_temp: float = 0.07) -> torch.Tensor:
    """``mean_i sum_k -softmax((t_i - c) / tau_t)_k log_softmax(s_i / tau_s)_k`` (teacher detached)."""
    if student_out.shape != teacher_out.shape:
        raise ValueError(f'cross_modal_dino_loss: student {tuple(student_out.shape)} and teacher '
                         f'{tuple(teacher_out.shape)} outputs differ')
    q = F.softmax((teacher_out.detach() - center) / teacher_temp, dim=-1)
    return (-q * F.log_softmax(student_out / student_temp, dim=-1)).sum(dim=-1).mean()


class CrossModalDINOLoss(nn.Module):
    """:func:`cross_modal_dino_loss` with the teacher centre as a buffer, updated after each training call."""

    def __init__(self, out_dim: int, teacher_temp: float = 0.07, student_temp: float = 0.1,
                 center_momentum: float = 0.9):
        super().__init__()
        self.teacher_temp, self.student_temp, self.center_momentum = teacher_temp, student_temp, center_momentum
        self.register_buffer('center', torch.zeros(1, out_dim))

    def forward(self, student_out, teacher_out):
        loss = cross_modal_dino_loss(student_out, teacher_out, self.center, self.student_temp, self.teacher_temp)
        if self.training:
            self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = teacher_out.detach().mean(dim=0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            batch_center /= torch.distributed.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


class MMDLoss(nn.Module):
    """:func:`kdtoolbox.losses.mmd.mmd_loss` as a module (``forward(x, y)``)."""

    def __init__(self, gammas: Sequence[float] = DEFAULT_GAMMAS):
        super().__init__()
        self.gammas = tuple(gammas)

    def forward(self, x, y):
        return mmd_loss(x, y, self.gammas)


def cosine_momentum(iteration: int, total_iters: Optional[int], start: float, end: float) -> float:
    """``end - (end - start) (cos(pi k / K) + 1) / 2`` (``start`` when ``K`` is unknown)."""
    if not total_iters:
        return start
    k = min(max(iteration, 0), total_iters)
    return end - (end - start) * (math.cos(math.pi * k / total_iters) + 1) / 2


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Parameters: ``t <- m t + (1 - m) s``; buffers: copied."""
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        raise KeyError(f'EMA update: the teacher and student parameters differ: '
                       f'{sorted(set(t_params) ^ set(s_params))[:5]}')
    for name, p in t_params.items():
        if p.shape != s_params[name].shape:
            raise ValueError(f'EMA update: {name} has shape {tuple(p.shape)} in the teacher and '
                             f'{tuple(s_params[name].shape)} in the student')
        p.mul_(momentum).add_(s_params[name].detach().to(p.dtype), alpha=1 - momentum)
    s_bufs = dict(student.named_buffers())
    for name, b in teacher.named_buffers():
        if name in s_bufs:
            b.copy_(s_bufs[name])


class XKD(BaseDistiller):
    """Cross-modal KD between a video and an audio student with EMA teachers, plus MMD alignment.

    Args:
        video_model: the video student's model dict (the EMA video teacher is built from it).
        audio_model: the audio student's model dict (e.g. ``LogMelAudioCNN``).
        out_dim, hidden_dim, bottleneck_dim, num_layers: the DINO heads (8192, 2048, 256, 3).
        teacher_temp: ``dict(video=0.1, audio=0.07)``; student_temp: 0.1; center_momentum: 0.9.
        ema_momentum: ``(m0, m1)`` of the cosine schedule (0.997, 1.0); total_iters: its length
            (None: the runner's ``max_iters``).
        cmkd_weight, align_weight: the loss weights (1, 1); audio_cls_weight: CE of the audio
            student's head (0: off).
        gammas: the MMD kernel bandwidths.
    """

    def __init__(self, video_model: dict, audio_model: dict, out_dim: int = 8192, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, num_layers: int = 3,
                 teacher_temp: Optional[Mapping[str, float]] = None, student_temp: float = 0.1,
                 center_momentum: float = 0.9, ema_momentum: Sequence[float] = (0.997, 1.0),
                 total_iters: Optional[int] = None, cmkd_weight: float = 1.0, align_weight: float = 1.0,
                 audio_cls_weight: float = 0.0, gammas: Sequence[float] = DEFAULT_GAMMAS,
                 student_recorders: Optional[Mapping[str, Any]] = None, init_cfg=None):
        super().__init__(student_recorders or dict(feature='neck'), {}, init_cfg=init_cfg)
        temps = dict(video=0.1, audio=0.07)
        temps.update(teacher_temp or {})
        self.audio_student = MODELS.build(audio_model, where='distiller.audio_model')
        self.video_teacher = MODELS.build(video_model, where='distiller.video_model')
        for name, net in (('video_model', self.video_teacher), ('audio_model', self.audio_student)):
            if not hasattr(net, 'extract_feat') or not hasattr(net, 'feature_dim'):
                raise TypeError(f'XKD: distiller.{name} ({type(net).__name__}) must be one of the av networks '
                                f'(with extract_feat and feature_dim)')
        self.audio_teacher = copy.deepcopy(self.audio_student)
        head = dict(out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim, num_layers=num_layers)
        self.video_head = DINOHead(self.video_teacher.feature_dim, **head)
        self.audio_head = DINOHead(self.audio_student.feature_dim, **head)
        self.video_head_ema = copy.deepcopy(self.video_head)
        self.audio_head_ema = copy.deepcopy(self.audio_head)
        for module in self._ema_modules():
            module.requires_grad_(False)
        self.loss_v2a = CrossModalDINOLoss(out_dim, temps['video'], student_temp, center_momentum)
        self.loss_a2v = CrossModalDINOLoss(out_dim, temps['audio'], student_temp, center_momentum)
        self.align = MMDLoss(gammas)
        self.ema_momentum, self.total_iters = tuple(ema_momentum), total_iters
        self.cmkd_weight, self.align_weight, self.audio_cls_weight = cmkd_weight, align_weight, audio_cls_weight
        self.register_buffer('ema_initialized', torch.tensor(0, dtype=torch.long))

    def _ema_modules(self):
        return [self.video_teacher, self.audio_teacher, self.video_head_ema, self.audio_head_ema]

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._ema_modules():
            module.eval()
        return self

    def momentum(self, iteration: int) -> float:
        total = self.total_iters
        if total is None:
            try:
                from mmengine.logging import MessageHub
                total = MessageHub.get_current_instance().get_info('max_iters')
            except Exception:  # noqa: BLE001
                total = None
        return cosine_momentum(iteration, total, *self.ema_momentum)

    @torch.no_grad()
    def ema_step(self, video_student: nn.Module, iteration: int) -> None:
        """Initialise the teachers from the students (first call) or move them by one EMA step."""
        pairs = ((self.video_teacher, video_student), (self.audio_teacher, self.audio_student),
                 (self.video_head_ema, self.video_head), (self.audio_head_ema, self.audio_head))
        if int(self.ema_initialized) == 0:
            for teacher, student in pairs:
                try:
                    teacher.load_state_dict(student.state_dict(), strict=True)
                except RuntimeError as exc:
                    raise RuntimeError(f'XKD: the EMA teacher built from distiller.video_model does not match the '
                                       f"student ({type(student).__name__}): give the student's model dict: {exc}") from exc
            self.ema_initialized.fill_(1)
            return
        m = self.momentum(iteration)
        for teacher, student in pairs:
            ema_update(teacher, student, m)

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        if self.training:
            if context.student is None:
                raise ValueError('XKD: context.student is needed for the EMA update of the video teacher')
            self.ema_step(context.student, context.iteration)
        inputs = context.inputs
        video_feat = student['feature']
        _, audio_feat = self.audio_student.extract_feat(inputs, context.data_samples)
        with torch.no_grad():
            _, video_t = self.video_teacher.extract_feat(inputs, context.data_samples)
            _, audio_t = self.audio_teacher.extract_feat(inputs, context.data_samples)
            hv_t, ha_t = self.video_head_ema(video_t), self.audio_head_ema(audio_t)
        hv_s, ha_s = self.video_head(video_feat), self.audio_head(audio_feat)
        v2a = self.loss_v2a(ha_s, hv_t)  # video teacher -> audio student
        a2v = self.loss_a2v(hv_s, ha_t)  # audio teacher -> video student
        align = (self.align(hv_s, ha_s) + self.align(hv_t, ha_t)) / 2
        losses = {'xkd.loss_cmkd': self.cmkd_weight * (v2a + a2v) / 2,
                  'xkd.loss_align': self.align_weight * align}
        if self.audio_cls_weight:
            labels = gt_labels(context.data_samples, audio_feat.device, 'XKD')
            losses['xkd.loss_audio_cls'] = self.audio_cls_weight * F.cross_entropy(
                self.audio_student._logits(audio_feat), labels)
        return losses
