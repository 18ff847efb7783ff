"""What a distillation loss may need besides the features: the batch's ground truth and shapes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch


def runner_counters() -> tuple[int, int]:
    """``(iteration, epoch)`` of the running mmengine runner (0-based, from its MessageHub); (0, 0)
    outside a runner."""
    try:
        from mmengine.logging import MessageHub
        hub = MessageHub.get_current_instance()
        return int(hub.get_info('iter', 0) or 0), int(hub.get_info('epoch', 0) or 0)
    except Exception:  # noqa: BLE001  (no runner: counters stay 0)
        return 0, 0


@dataclass
class DistillContext:
    """Per-step information handed to every distiller and to losses that ask for ``context``.

    Attributes:
        data_samples: the batch's data samples (mmdet ``DetDataSample``: ``gt_instances.bboxes``
            in xyxy pixels of the resized, unpadded image; ``metainfo`` with ``img_shape``,
            ``pad_shape``, ``batch_input_shape``), or whatever the student's ``loss()`` receives.
        inputs: the preprocessed batch as given to the student (e.g. ``[N, 3, H, W]``).
        batch_input_shape: ``(H, W)`` of the padded batch tensor; feature-grid coordinates of
            level k are ``pixel / (H / H_k)``. None when the data samples do not carry it.
        iteration, epoch: the runner's counters (0 outside a runner).
        student, teacher: the two models, for distillers that run part of one model on the other's
            data (e.g. the teacher's RoI head on the student's sampled RoIs); the teacher must
            only be called under ``torch.no_grad()``.
        extra: free slot for distillers that compute something once per batch and share it
            across losses (e.g. box masks).
    """
    data_samples: Optional[Sequence[Any]] = None
    inputs: Any = None
    batch_input_shape: Optional[tuple[int, int]] = None
    iteration: int = 0
    epoch: int = 0
    student: Any = None
    teacher: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> Optional[torch.device]:
        if isinstance(self.inputs, torch.Tensor):
            return self.inputs.device
        return None

    @classmethod
    def from_batch(cls, inputs: Any, data_samples: Optional[Sequence[Any]]) -> 'DistillContext':
        """Fill the shapes from the data samples and the counters from mmengine's MessageHub."""
        shape = None
        if data_samples:
            meta = getattr(data_samples[0], 'metainfo', {}) or {}
            if 'batch_input_shape' in meta:
                shape = tuple(int(s) for s in meta['batch_input_shape'])
        if shape is None and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            shape = tuple(inputs.shape[-2:])
        iteration, epoch = runner_counters()
        return cls(data_samples=data_samples, inputs=inputs, batch_input_shape=shape,
                   iteration=iteration, epoch=epoch)
