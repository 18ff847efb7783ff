"""``AVDataSample``: the data sample of one audio-visual clip (mmengine ``BaseDataElement``).

Data fields:
    gt_label (LongTensor [1]): the class index.
    teacher_embedding (float32 [D]): the precomputed teacher feature ``<dir>/<video_id>.npy``,
        only when the dataset has a teacher-embedding directory.
    pred_score (float32 [num_classes]) and pred_feature (float32 [D]): set by the student in
        ``predict`` mode (softmax of the logits, and the pooled feature).
Metainfo:
    video_id (str), window_index (int), num_windows (int): the sliding-window test protocol
    (training clips have window_index 0 and num_windows 1); also label_name, frame_inds.
"""
from __future__ import annotations

import torch
from mmengine.structures import BaseDataElement

__all__ = ['AVDataSample']


class AVDataSample(BaseDataElement):
    """One clip's labels, optional teacher embedding and predictions (see the module docstring)."""

    @property
    def gt_label(self) -> torch.Tensor:
        return self._gt_label

    @gt_label.setter
    def gt_label(self, value) -> None:
        value = torch.as_tensor(value, dtype=torch.long).reshape(-1)
        if value.numel() != 1:
            raise ValueError(f'AVDataSample.gt_label: expected one class index, got shape {tuple(value.shape)}')
        self.set_field(value, '_gt_label', dtype=torch.Tensor)

    @gt_label.deleter
    def gt_label(self) -> None:
        del self._gt_label

    @property
    def teacher_embedding(self) -> torch.Tensor:
        return self._teacher_embedding

    @teacher_embedding.setter
    def teacher_embedding(self, value) -> None:
        value = torch.as_tensor(value, dtype=torch.float32)
        if value.dim() != 1:
            raise ValueError(f'AVDataSample.teacher_embedding: expected a vector [D], got shape {tuple(value.shape)}')
        self.set_field(value, '_teacher_embedding', dtype=torch.Tensor)

    @teacher_embedding.deleter
    def teacher_embedding(self) -> None:
        del self._teacher_embedding
