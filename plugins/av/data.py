"""Audio-visual data: the data sample, the data preprocessor, and the registration of the datasets,
transforms and the retrieval gallery hook (modules ``structures``, ``datasets``, ``transforms``,
``generate``, ``hooks`` of this package).

The contract with the models (a dataset item, then a batch)::

    item  = dict(inputs=dict(video=uint8 [3, T, H, W] (RGB), audio=float32 [L] (16 kHz)),
                 data_samples=AVDataSample)          # 'audio' only when the dataset has audio,
                                                     # 'video' only when it has frames
    batch = AVDataPreprocessor(...)(pseudo_collate(items))
          = dict(inputs=dict(video=float32 [N, 3, T, H, W] ((x - mean_c) / std_c, 0-255 scale),
                             audio=float32 [N, L]),
                 data_samples=[AVDataSample] * N)     # on the model's device

The default mean / std are ImageNet's on the 0-255 scale (the official code normalises with
ImageNet statistics after ``ToTensor``, i.e. on 0-1: the same thing). All clips of a batch must
have the same T, H, W and L (the datasets produce fixed sizes); a mismatch is an error naming the
key and the shapes.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from .structures import AVDataSample

__all__ = ['AVDataSample', 'AVDataPreprocessor', 'register']

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class AVDataPreprocessor(BaseDataPreprocessor):
    """Stack, cast and normalise an audio-visual batch (see the module docstring).

    Args:
        mean, std: per-channel statistics of the RGB video on the 0-255 scale (None: no
            normalisation, the video is only cast to float32).
        audio_scale: multiplies the waveform (default 1: waveforms are already in [-1, 1]).
    """

    def __init__(self, mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                 std: Optional[Sequence[float]] = IMAGENET_STD, audio_scale: float = 1.0,
                 non_blocking: bool = False):
        super().__init__(non_blocking=non_blocking)
        if (mean is None) != (std is None):
            raise ValueError('AVDataPreprocessor: give both mean and std, or neither')
        self._normalise = mean is not None
        if self._normalise:
            if len(mean) != 3 or len(std) != 3:
                raise ValueError(f'AVDataPreprocessor: mean and std need 3 values (RGB), got {mean}, {std}')
            if any(s <= 0 for s in std):
                raise ValueError(f'AVDataPreprocessor: std must be positive, got {std}')
            self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1), False)
            self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1), False)
        self.audio_scale = float(audio_scale)

    @staticmethod
    def _stack(values: Any, key: str, ndim: int) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            if values.dim() != ndim + 1:
                raise ValueError(f'AVDataPreprocessor: inputs[{key!r}] has shape {tuple(values.shape)}; '
                                 f'expected a batch of {ndim}-d tensors')
            return values
        values = list(values)
        if not values:
            raise ValueError(f'AVDataPreprocessor: inputs[{key!r}] is empty')
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(f'AVDataPreprocessor: the clips of a batch differ in inputs[{key!r}] shape: '
                             f'{sorted(shapes)} (use fixed clip_len / crop size / audio length)')
        if len(next(iter(shapes))) != ndim:
            raise ValueError(f'AVDataPreprocessor: inputs[{key!r}] items have shape {next(iter(shapes))}; '
                             f'expected {ndim}-d tensors')
        return torch.stack([torch.as_tensor(v) for v in values])

    def forward(self, data: dict, training: bool = False) -> dict:
        if not isinstance(data, Mapping) or 'inputs' not in data:
            raise KeyError("AVDataPreprocessor: expected a batch dict with 'inputs' (and 'data_samples')")
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):  # a list of per-item dicts (no pseudo_collate)
            keys = set().union(*(d.keys() for d in inputs)) if inputs else set()
            inputs = {k: [d[k] for d in inputs] for k in keys}
        if not isinstance(inputs, Mapping):
            raise TypeError(f"AVDataPreprocessor: 'inputs' must be a dict with 'video' and/or 'audio', "
                            f'got {type(inputs).__name__}')
        unknown = set(inputs) - {'video', 'audio'}
        if unknown:
            raise KeyError(f"AVDataPreprocessor: unknown input keys {sorted(unknown)} (expected 'video', 'audio')")
        out = {}
        if 'video' in inputs:
            video = self._stack(inputs['video'], 'video', 4).to(self.device, non_blocking=self._non_blocking)
            if video.shape[1] != 3:
                raise ValueError(f"AVDataPreprocessor: inputs['video'] must be [N, 3, T, H, W], "
                                 f'got {tuple(video.shape)}')
            video = video.float()
            if self._normalise:
                video = (video - self.mean) / self.std
            out['video'] = video
        if 'audio' in inputs:
            audio = self._stack(inputs['audio'], 'audio', 1).to(self.device, non_blocking=self._non_blocking)
            out['audio'] = audio.float() * self.audio_scale
        samples = data.get('data_samples')
        if samples is not None:
            samples = list(self.cast_data(list(samples)))
        return {'inputs': out, 'data_samples': samples}


def register(registry) -> None:
    from .datasets import AVFrameFolderDataset, AVVideoFileDataset
    from .hooks import GalleryFeatureHook
    from .transforms import TRANSFORMS as transform_classes
    registry.model(AVDataPreprocessor)
    registry.dataset(AVFrameFolderDataset)
    registry.dataset(AVVideoFileDataset)
    for cls in transform_classes:
        registry.transform(cls)
    registry.hook(GalleryFeatureHook)
