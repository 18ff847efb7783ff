"""MasKD: Masked Distillation with Receptive Tokens (Huang et al., ICLR 2023).

Official code: hunto/MasKD (stage 1 ``mmdetection/maskd.py`` + ``mmdetection/maskd_hook.py`` +
``mmdetection/configs/maskd/``; stage 2 ``mmrazor/mmrazor/models/losses/maskd.py`` +
``mmrazor/configs/distill/maskd/``). MasKD uses no boxes: images without GT boxes need nothing
special (stage 1's detection loss handles them as the detector does).

**Mask module** (:class:`MaskModule`, one per FPN level, ``C`` channels, ``K`` tokens, K = 6):
tokens ``T [K, C]`` (init N(0, 0.01)); for a feature ``F [N, C, H, W]``::

    masks    M = sigmoid(einsum('kc,nchw->nkhw', T, F))                        [N, K, H, W]
    weights  w = softmax_K(Conv1x1_{C->K}(GAP(Conv3x3_{C->C}(F))))             [N, K]

(convs: N(0, sqrt(2 / fan_out)) weights, zero biases). ``weight_mask=False`` drops ``w`` (stage 1
sums the K masked features, stage 2 averages over K, as the official code does).

**Stage 1** (:class:`MasKDTokenLearner`, a model the runner trains): the teacher detector is built
from its config, loaded and frozen (``requires_grad=False``; the detector is in train mode with
every BatchNorm in eval, as the official hook does). A forward hook on its ``neck`` replaces each
FPN output by ``F * sum_k w_k M_k`` (= ``sum_k w_k (F * M_k)``, without the ``[N, K, C, H, W]``
tensor); the detector's own loss on those features plus, per level, the Dice diversity loss::

    L_div = mean_{n, i != j} 2 sum_hw(M_i M_j) / (sum_hw M_i^2 + sum_hw M_j^2)     (per level)

(``loss_div{l}``, weight ``div_weight`` = 1) train only the mask modules. The detector is held
outside the module tree, so the checkpoint's ``state_dict`` holds exactly the mask modules, with
the official checkpoints' key names: ``mask_modules.{l}.mask_token`` ``[K, C]``,
``mask_modules.{l}.prob.0.{weight,bias}`` (3x3 conv) and ``mask_modules.{l}.prob.2.{weight,bias}``
(1x1 conv). The hook stays on in every mode, so validating the learner measures the masked
teacher's mAP (the official evaluation at iteration 2000 does the same).
Official schedule: 2000 iterations (8 GPUs x 2 images), cosine LR to 1e-6, no warm-up; RetinaNet
Adam lr 0.01 wd 1e-3; Faster R-CNN SGD lr 0.1 (momentum 0.9, wd 1e-4).

**Stage 2** (:class:`MasKD`, a distiller): the stage-1 mask modules are loaded strictly from
``tokens_checkpoint`` (the keys containing ``mask_modules.``, any prefix before it dropped, so
the official released token files should load too: not verified offline) and frozen with
``requires_grad=False``: they get no gradient and the optimizer skips them, so no ``lr_mult=0``
paramwise trick is needed. Per level,
with ``S`` the student feature after a 1x1 conv ``align`` (always present, as in the official
``align_module``, random PyTorch init; it also absorbs a student/teacher channel mismatch) and
``T`` the teacher's::

    M   = sigmoid(T_tok . T)                                  [N, K, H, W]
    M  <- M * stopgrad(sigmoid(T_tok . S))                    once iteration >= custom_mask_warmup
    d_k = sum_hw (M_k S - M_k T)^2 / max(sum_hw M_k, eps)     [N, K, C]   (the mask is squared)
    L   = loss_weight * mean_n sum_k w_k(T) mean_c d_k        (``fpn{l}.loss_mask``)

summed over levels by the optimizer (the official code sums them into one loss). Plus the
regression-head KD term of the official configs, per call of the recorded conv (RetinaNet's
``bbox_head.retina_reg``, run once per level): ``reg_weight * mean(SmoothL1_beta(s_l, t_l))``
(``reg{l}.loss_reg``; ``reg_loss='l1'`` for the R101 config's ``L1Loss``).

Official hyper-parameters (``mmrazor/configs/distill/maskd``): RetinaNet R101 -> R50: loss_weight 7,
custom_mask_warmup 7000, ``L1Loss`` on ``retina_reg``; RetinaNet X101 -> R50: loss_weight 7,
warm-up 8500, ``SmoothL1Loss`` (the defaults here); both with the student's neck and head
initialised from the teacher, SGD lr 0.02, 1000 warm-up iterations, grad clip 35, 2x schedule.
Faster R-CNN R101 -> R50: loss_weight 1, warm-up 7330, no inheritance, SGD lr 0.02 (no grad
clip), and ``roi_reg=True`` (``reg_module=None``): SmoothL1 between the student's
``roi_head.bbox_head.fc_reg`` output and the teacher's RoI head regression on the **student's**
sampled RoIs (recorded at the input of the student's ``bbox_roi_extractor``; the teacher's RoI
extractor and bbox head run under ``no_grad`` on its recorded neck features), ``roi_reg.loss_reg``.

Deviations from the official code:

- the mask customisation starts at the runner's global iteration (``context.iteration``), not at
  the official per-process count of loss calls (which restarts at 0 on resume);
- ``sum_hw M_k`` is clamped to ``eps`` (the official code divides unguarded: a token whose mask
  underflows to 0 gives 0/0 = NaN; here it contributes 0);
- the Dice loss adds ``eps`` once to the denominator (the official code adds it to both sums) and
  is 0 for K = 1 (the official mean over no pairs is NaN);
- the masked sums are computed as ``einsum(M^2, (S - T)^2)`` (equal up to rounding, no
  ``[N, K, C, H, W]`` temporaries);
- the stage-1 detector runs frozen with ``requires_grad=False`` outside the module tree instead of
  the official hook that rewrites the optimizer's param groups and re-wraps DDP with
  ``find_unused_parameters=True``;
- ``roi_reg``: the official forward-pre-hook copies the student's RoIs into the teacher's RoI
  extractor input in place during the teacher's own forward; here the teacher stops after its neck
  and its RoI head is called on the student's RoIs (the same computation, no in-place resize);
- official bug avoided: the Faster R-CNN stage-1 config inherits ``faster_rcnn_r50_fpn_2x`` but
  loads the R101 checkpoint non-strictly (a corrupted teacher); here the teacher config and
  checkpoint are given together and loaded strictly.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader
from torch.nn.modules.batchnorm import _BatchNorm

from kdtoolbox.engine import BaseDistiller, DistillContext, RecordError, Records
from kdtoolbox.engine.teacher import build_teacher, resolve_checkpoint
from kdtoolbox.ops.roi_features import roi_head_predictions

TOKEN_PREFIX = 'mask_modules.'


# ------------------------------------------------------------------------------------ the math
def receptive_masks(feat: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``sigmoid(T . F)``: ``feat [N, C, H, W]``, ``tokens [K, C]`` -> ``[N, K, H, W]``."""
    return torch.einsum('kc,nchw->nkhw', tokens.to(feat.dtype), feat).sigmoid()


def dice_diversity(masks: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``mean_{n, i != j} 2 sum(M_i M_j) / (sum M_i^2 + sum M_j^2)`` of ``masks [N, K, H, W]``."""
    n, k = masks.shape[:2]
    if k < 2:
        return masks.sum() * 0.0
    flat = masks.reshape(n, k, -1)
    if flat.dtype in (torch.float16, torch.bfloat16):  # fp32 sums over H*W under AMP
        flat = flat.float()
    inner = torch.bmm(flat, flat.transpose(1, 2))  # [N, K, K]: sum_hw M_i M_j
    sq = torch.diagonal(inner, dim1=1, dim2=2)  # [N, K]: sum_hw M_i^2
    dice = 2 * inner / (sq.unsqueeze(2) + sq.unsqueeze(1) + eps)
    off_diag = ~torch.eye(k, dtype=torch.bool, device=masks.device)
    return dice[:, off_diag].mean()


def masked_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor,
                             weights: Optional[torch.Tensor] = None, eps: float = 1e-12) -> torch.Tensor:
    """MasKD's unweighted loss on one level.

    Args:
        student, teacher: ``[N, C, H, W]`` (the teacher is detached here).
        masks: ``[N, K, H, W]``.
        weights: ``[N, K]`` token weights, or None for the mean over tokens.
    Returns:
        ``mean_n sum_k w_k mean_c sum_hw (M_k (S - T))^2 / max(sum_hw M_k, eps)``.
    """
    if student.shape != teacher.shape:
        raise ValueError(f'MasKD: student feature {tuple(student.shape)} and teacher feature '
                         f'{tuple(teacher.shape)} differ (set student_channels / teacher_channels)')
    n, c, h, w = student.shape
    k = masks.shape[1]
    sq_diff = (student - teacher.detach()).pow(2).reshape(n, c, h * w)
    sq_mask = masks.pow(2).reshape(n, k, h * w)
    per_channel = torch.bmm(sq_mask, sq_diff.transpose(1, 2))  # [N, K, C]
    area = masks.sum(dim=(2, 3)).clamp(min=eps)  # [N, K]
    per_token = per_channel.mean(dim=2) / area  # [N, K]
    if weights is None:
        return per_token.mean()
    return (per_token * weights).sum(dim=1).mean()


def reg_head_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = 'smooth_l1',
                  beta: float = 1.0) -> torch.Tensor:
    """Mean element-wise SmoothL1 (mmdet's, ``beta``) or L1 between two head outputs."""
    if student.shape != teacher.shape:
        raise ValueError(f'MasKD: student regression output {tuple(student.shape)} and teacher '
                         f'{tuple(teacher.shape)} differ')
    teacher = teacher.detach()
    if kind == 'l1':
        return (student - teacher).abs().mean()
    return F.smooth_l1_loss(student, teacher, reduction='mean', beta=beta)


# ------------------------------------------------------------------------------------ mask module
class MaskModule(nn.Module):
    """Receptive tokens ``mask_token [K, C]`` and the token-weight branch ``prob`` of one level.

    No ``init_weights`` method on purpose: mmengine's ``init_weights()`` of a parent would call it
    and overwrite loaded tokens (:meth:`reset_parameters` runs once, in ``__init__``).
    """

    def __init__(self, channels: int, num_tokens: int = 6, weight_mask: bool = True):
        super().__init__()
        if channels < 1 or num_tokens < 1:
            raise ValueError(f'MaskModule: channels ({channels}) and num_tokens ({num_tokens}) must be >= 1')
        self.weight_mask = weight_mask
        self.mask_token = nn.Parameter(torch.empty(num_tokens, channels))
        self.prob = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, num_tokens, kernel_size=1)) if weight_mask else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.mask_token, 0.0, 0.01)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)

    def masks(self, feat: torch.Tensor) -> torch.Tensor:
        """``[N, K, H, W]``."""
        return receptive_masks(feat, self.mask_token)

    def token_weights(self, feat: torch.Tensor) -> Optional[torch.Tensor]:
        """``[N, K]`` (softmax over tokens), or None without the weight branch."""
        if self.prob is None:
            return None
        return self.prob(feat).flatten(1).softmax(dim=1)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: ``(F * sum_k w_k M_k  [N, C, H, W], masks [N, K, H, W])``."""
        masks = self.masks(feat)
        weights = self.token_weights(feat)
        combined = masks.sum(1) if weights is None else torch.einsum('nkhw,nk->nhw', masks, weights)
        return feat * combined.unsqueeze(1), masks


def _per_level(value: Union[int, Sequence[int]], num_levels: int, what: str, owner: str) -> list[int]:
    values = [int(value)] * num_levels if isinstance(value, int) else [int(v) for v in value]
    if len(values) != num_levels:
        raise ValueError(f'{owner}: {num_levels} levels but {len(values)} {what}')
    return values


def build_mask_modules(channels: Sequence[int], num_tokens: int, weight_mask: bool) -> nn.ModuleList:
    return nn.ModuleList(MaskModule(c, num_tokens, weight_mask) for c in channels)


# ------------------------------------------------------------------------------------ token I/O
def resolve_tokens_checkpoint(path: str) -> str:
    """A file, a URL, or a work dir whose latest checkpoint is used."""
    return resolve_checkpoint(path, key='tokens_checkpoint', hint='run stage 1 (MasKDTokenLearner) first')


def token_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The ``mask_modules.*`` entries of a checkpoint, keys relative to ``mask_modules``
    (``'0.mask_token'``, ...); any prefix before ``mask_modules.`` is dropped."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    out = {}
    for key, value in state.items():
        pos = key.find(TOKEN_PREFIX)
        if pos >= 0:
            out[key[pos + len(TOKEN_PREFIX):]] = value
    return out


def load_tokens(modules: nn.ModuleList, path: str) -> str:
    """Load the mask modules strictly from ``path``; errors name the file and the keys."""
    path = resolve_tokens_checkpoint(path)
    state = token_state_dict(CheckpointLoader.load_checkpoint(path, map_location='cpu'))
    if not state:
        raise KeyError(f'tokens_checkpoint {path!r} holds no {TOKEN_PREFIX}* keys: is it a stage-1 '
                       f'(MasKDTokenLearner) checkpoint?')
    expected = modules.state_dict()
    missing = sorted(TOKEN_PREFIX + k for k in expected if k not in state)
    unexpected = sorted(TOKEN_PREFIX + k for k in state if k not in expected)
    if missing or unexpected:
        raise KeyError(f'tokens_checkpoint {path!r} does not fit the mask modules (levels, '
                       f'weight_mask): missing keys {missing}, unexpected keys {unexpected}')
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(f'tokens_checkpoint {path!r}: {TOKEN_PREFIX}{key} has shape '
                             f'{tuple(value.shape)}, the mask module expects {tuple(expected[key].shape)} '
                             f'(channels / num_tokens)')
    modules.load_state_dict(state, strict=True)
    return path


# ------------------------------------------------------------------------------------ stage 1
class MasKDTokenLearner(BaseModel):
    """Stage 1: learn the receptive tokens on a frozen teacher detector.

    Args:
        teacher: the detector's config path (``'mmdet::...'`` works), Config or model dict.
        teacher_checkpoint: its weights (a file or a work dir), loaded on CPU; None keeps random
            weights (smoke tests only).
        teacher_strict: load the checkpoint strictly.
        channels: the neck's output channels (an int for every level, or a list).
        num_levels: the number of neck outputs (with an int ``channels``).
        num_tokens: K (6).
        weight_mask: learn the token-weight branch.
        neck: the module whose output tuple is masked.
        div_weight: weight of the Dice diversity loss (1).
        data_preprocessor: defaults to the teacher's own.
    """

    def __init__(self, teacher: Union[str, dict], teacher_checkpoint: Optional[str] = None,
                 teacher_strict: bool = True, channels: Union[int, Sequence[int]] = 256,
                 num_levels: int = 5, num_tokens: int = 6, weight_mask: bool = True, neck: str = 'neck',
                 div_weight: float = 1.0, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        detector = build_teacher(teacher, teacher_checkpoint, teacher_strict)
        if data_preprocessor is None:
            data_preprocessor = getattr(detector, 'data_preprocessor', None)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if isinstance(channels, int):
            channels = [channels] * num_levels
        self.channels = [int(c) for c in channels]
        self.mask_modules = build_mask_modules(self.channels, num_tokens, weight_mask)
        self.div_weight = float(div_weight)
        self.neck = neck
        # outside the module tree: not in state_dict(), not seen by the optimizer or DDP
        object.__setattr__(self, 'teacher', detector)
        try:
            neck_module = detector.get_submodule(neck)
        except AttributeError:
            raise KeyError(f'MasKDTokenLearner: the teacher has no module {neck!r} (neck=)') from None
        self._div_losses: list[torch.Tensor] = []
        self._hook = neck_module.register_forward_hook(self._mask_neck_outputs)

    def _mask_neck_outputs(self, module, inputs, outputs):
        outs = tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)
        if len(outs) != len(self.mask_modules):
            raise ValueError(f'MasKDTokenLearner: {self.neck!r} gave {len(outs)} outputs but there are '
                             f'{len(self.mask_modules)} mask modules (channels / num_levels)')
        masked = []
        self._div_losses = []
        for level, (mask_module, feat) in enumerate(zip(self.mask_modules, outs)):
            if feat.shape[1] != self.channels[level]:
                raise ValueError(f'MasKDTokenLearner: {self.neck!r} output {level} has {feat.shape[1]} '
                                 f'channels, channels[{level}] = {self.channels[level]}')
            out, masks = mask_module(feat)
            masked.append(out)
            self._div_losses.append(dice_diversity(masks))
        return tuple(masked)

    # the detector follows device moves; it stays frozen with its BatchNorms in eval
    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.teacher._apply(fn)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.train(mode)
        for m in self.teacher.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
        return self

    def forward(self, inputs: Any, data_samples: Optional[list] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('predict', 'tensor'):
            return self.teacher(inputs, data_samples, mode=mode)
        raise ValueError(f"MasKDTokenLearner: invalid mode {mode!r}: expected 'loss', 'predict' or 'tensor'")

    def loss(self, inputs: Any, data_samples: Optional[list] = None) -> dict:
        self._div_losses = []
        losses = dict(self.teacher.loss(inputs, data_samples))
        if not self._div_losses:
            raise RuntimeError(f'MasKDTokenLearner: the teacher ran without calling {self.neck!r}')
        for level, div in enumerate(self._div_losses):
            losses[f'loss_div{level}'] = self.div_weight * div
        self._div_losses = []
        return losses


# ------------------------------------------------------------------------------------ stage 2
class MasKD(BaseDistiller):
    """Stage 2: masked feature distillation with frozen stage-1 tokens, plus the regression-head KD.

    Args:
        tokens_checkpoint: the stage-1 checkpoint (a file, URL or work dir); None keeps random
            tokens (a warning says so: smoke tests only).
        student_channels, teacher_channels: neck channels (int or per-level list); the 1x1
            ``align`` conv maps the student's to the teacher's.
        num_levels: levels distilled (the first ``num_levels`` outputs of the recorded neck).
        num_tokens, weight_mask: as in stage 1 (must match the checkpoint).
        loss_weight: weight of the masked loss (7 RetinaNet, 1 Faster R-CNN).
        custom_mask, custom_mask_warmup: multiply the masks by the student's (stop-gradient) from
            global iteration ``custom_mask_warmup`` on (8500 RetinaNet X101, 7000 R101, 7330 Faster
            R-CNN).
        student_module, teacher_module: the recorded necks (their output tuples).
        reg_module: the regression conv of both heads (called once per level); None disables
            the regression-head term.
        reg_loss: 'smooth_l1' (mmdet ``SmoothL1Loss``) or 'l1'; reg_beta: SmoothL1's beta;
        reg_weight: its weight (1).
        roi_reg: add the two-stage RoI regression KD (Faster R-CNN: ``reg_module=None``), with
            ``reg_loss``, ``reg_beta``, ``reg_weight``; roi_head: the RoI head's attribute path.
        eps: the guard of ``sum_hw M_k``.
    """

    #: the RoI head's inputs are not recorded on a batch where no RoI was sampled (handled in forward)
    optional_records = ('student.rois', 'student.roi_reg')


    def __init__(self, tokens_checkpoint: Optional[str] = None,
                 student_channels: Union[int, Sequence[int]] = 256,
                 teacher_channels: Union[int, Sequence[int]] = 256, num_levels: int = 5,
                 num_tokens: int = 6, weight_mask: bool = True, loss_weight: float = 7.0,
                 custom_mask: bool = True, custom_mask_warmup: int = 8500,
                 student_module: str = 'neck', teacher_module: str = 'neck',
                 reg_module: Optional[str] = 'bbox_head.retina_reg', reg_loss: str = 'smooth_l1',
                 reg_weight: float = 1.0, reg_beta: float = 1.0, roi_reg: bool = False,
                 roi_head: str = 'roi_head', eps: float = 1e-12, init_cfg=None):
        if reg_loss not in ('smooth_l1', 'l1'):
            raise ValueError(f"MasKD: reg_loss must be 'smooth_l1' or 'l1', got {reg_loss!r}")
        student_recorders = {'neck': student_module}
        teacher_recorders = {'neck': teacher_module}
        if reg_module:
            student_recorders['reg'] = reg_module
            teacher_recorders['reg'] = reg_module
        if roi_reg:
            student_recorders['rois'] = dict(module=f'{roi_head}.bbox_roi_extractor', io='input')
            student_recorders['roi_reg'] = f'{roi_head}.bbox_head.fc_reg'
        super().__init__(student_recorders, teacher_recorders, init_cfg=init_cfg)
        s_ch = _per_level(student_channels, num_levels, 'student channel counts', 'MasKD')
        t_ch = _per_level(teacher_channels, num_levels, 'teacher channel counts', 'MasKD')
        self.num_levels = num_levels
        self.loss_weight = float(loss_weight)
        self.custom_mask = custom_mask
        self.custom_mask_warmup = int(custom_mask_warmup)
        self.reg_module = reg_module
        self.reg_loss, self.reg_weight, self.reg_beta = reg_loss, float(reg_weight), float(reg_beta)
        self.roi_reg, self.roi_head = roi_reg, roi_head
        self.eps = float(eps)
        self.align = nn.ModuleList(nn.Conv2d(s, t, kernel_size=1) for s, t in zip(s_ch, t_ch))
        self.mask_modules = build_mask_modules(t_ch, num_tokens, weight_mask)
        if tokens_checkpoint is None:
            print_log('MasKD: tokens_checkpoint is None: the receptive tokens are random (run stage 1, '
                      'MasKDTokenLearner, for real training)', logger='current', level=logging.WARNING)
            self.tokens_checkpoint = None
        else:
            self.tokens_checkpoint = load_tokens(self.mask_modules, tokens_checkpoint)
        self.mask_modules.requires_grad_(False)
        self._customising = False

    def level_masks(self, student: torch.Tensor, teacher: torch.Tensor, level: int,
                    customise: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The (possibly customised) masks ``[N, K, H, W]`` and token weights ``[N, K]`` of a level."""
        module = self.mask_modules[level]
        with torch.no_grad():  # frozen tokens, teacher features: nothing to differentiate
            masks = module.masks(teacher)
            if customise:
                masks = masks * module.masks(student.detach())
            weights = module.token_weights(teacher)
        return masks, weights

    def mask_losses(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_levels, t_levels = student['neck'], teacher['neck']
        if len(s_levels) < self.num_levels or len(t_levels) < self.num_levels:
            raise ValueError(f'MasKD: expected {self.num_levels} levels, the student neck gave '
                             f'{len(s_levels)} and the teacher neck {len(t_levels)}')
        customise = self.custom_mask and context.iteration >= self.custom_mask_warmup
        if customise and not self._customising:
            print_log(f"MasKD: iteration {context.iteration}: the masks now include the student's "
                      f'(custom_mask_warmup={self.custom_mask_warmup})', logger='current')
        self._customising = customise
        losses = {}
        for level in range(self.num_levels):
            s = self.align[level](s_levels[level])
            t = t_levels[level].detach()
            masks, weights = self.level_masks(s, t, level, customise)
            value = masked_distillation_loss(s, t, masks, weights, self.eps)
            losses[f'fpn{level}.loss_mask'] = self.loss_weight * value
        return losses

    def reg_losses(self, student: Records, teacher: Records) -> dict:
        s_calls, t_calls = student.calls('reg'), teacher.calls('reg')
        if len(s_calls) != len(t_calls):
            raise ValueError(f'MasKD: {self.reg_module!r} ran {len(s_calls)} times in the student and '
                             f'{len(t_calls)} times in the teacher')
        return {f'reg{i}.loss_reg': self.reg_weight * reg_head_loss(s, t, self.reg_loss, self.reg_beta)
                for i, (s, t) in enumerate(zip(s_calls, t_calls))}

    @staticmethod
    def teacher_roi_regression(teacher: nn.Module, features: Sequence[torch.Tensor], rois: torch.Tensor,
                               roi_head: str = 'roi_head') -> torch.Tensor:
        """The teacher's box regression ``[R, 4 * classes]`` on ``rois [R, 5]``, under ``no_grad``."""
        return roi_head_predictions(teacher, features, rois, roi_head)[1]

    def roi_reg_losses(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        try:
            rois = student.get_call('rois', 0)[1]
            s_pred = student.get_call('roi_reg', 0)
        except RecordError:  # no RoI reached the student's bbox head in this step
            return {'roi_reg.loss_reg': student['neck'][0].sum() * 0.0}
        if context.teacher is None:
            raise RuntimeError('MasKD(roi_reg=True) needs context.teacher (DistillationModel sets it)')
        t_pred = self.teacher_roi_regression(context.teacher, teacher['neck'], rois, self.roi_head)
        return {'roi_reg.loss_reg': self.reg_weight * reg_head_loss(s_pred, t_pred, self.reg_loss, self.reg_beta)}

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        losses = self.mask_losses(student, teacher, context)
        if self.reg_module:
            losses.update(self.reg_losses(student, teacher))
        if self.roi_reg:
            losses.update(self.roi_reg_losses(student, teacher, context))
        return losses

    def visual_maps(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        """For ``tools/visualize.py``: ``fpn{l}/token{k}``, the mask ``[N, H_l, W_l]`` of receptive
        token ``k`` on level ``l`` as the loss uses it (:meth:`level_masks`: the teacher's, times the
        student's once past ``custom_mask_warmup``)."""
        s_levels, t_levels = student['neck'], teacher['neck']
        customise = self.custom_mask and context.iteration >= self.custom_mask_warmup
        maps = {}
        with torch.no_grad():
            for level in range(min(self.num_levels, len(s_levels), len(t_levels))):
                masks, _ = self.level_masks(self.align[level](s_levels[level]), t_levels[level], level, customise)
                for k in range(masks.shape[1]):
                    maps[f'fpn{level}/token{k}'] = masks[:, k]
        return maps


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(MasKD)
    registry.model(MasKDTokenLearner)
