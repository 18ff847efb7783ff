"""Networks of the audio-visual plugin: the R(2+1)D video student and the teachers.

Every network is an mmengine ``BaseModel`` with three submodules the distillers record:

- ``backbone``: the token map, ``[N, C, T', H', W']`` for video, ``[N, C, F', T']`` for audio;
- ``neck``: the pooled feature ``[N, D]``;
- ``head``: a ``Linear(D, num_classes)`` giving the logits ``[N, num_classes]``.

``forward(inputs, data_samples, mode)``: ``inputs`` is the preprocessed batch
``dict(video=float [N, 3, T, H, W], audio=float [N, L])`` (a bare tensor is taken as the
``input_key`` entry); ``'loss'`` returns ``dict(loss_cls=CE(logits, gt_label))``; ``'predict'`` sets
``pred_score`` (softmax ``[num_classes]``) and ``pred_feature`` (the pooled feature ``[D]``) on each
data sample; ``'tensor'`` returns the logits.

Components:

- :class:`R2Plus1D` (the video student of GeWu-Lab/cross-modal-distillation,
  ``models/r21d_with_featuremap.py``): every 3-D conv is factorised into a spatial ``1 x k x k``
  conv to ``M = floor(t k^2 C_in C_out / (k^2 C_in + t C_out))`` channels, BN, ReLU, and a temporal
  ``t x 1 x 1`` conv. Stem ``(2+1)D 3x7x7`` (stride 1,2,2) + BN + ReLU (no max-pool), then four
  stages of ``c, 2c, 4c, 8c`` channels (c = ``base_channels``, 64 officially), the last three
  downsampling by 2 in T, H and W (a ``(2+1)D 1x1x1`` stride-2 conv + BN on the shortcut). For
  ``16 x 112 x 112`` clips the token map is ``[N, 512, 2, 7, 7]`` (98 tokens).
  **Depth**: ``depth=10`` builds one block per stage ``(1, 1, 1, 1)``: this is what the official
  ``--model_depth 18`` builds (and the default here); ``depth=18`` gives ``(2, 2, 2, 2)`` (a true
  R(2+1)D-18) and ``depth=34`` gives ``(3, 4, 6, 3)``; ``layer_sizes`` overrides both.
- :class:`LogMelAudioCNN`: log-mel spectrogram computed inside (``torch.stft`` with a periodic Hann
  window, ``center=True``, reflect padding; power ``|X|^2``; HTK mel filterbank, triangles without
  area normalisation; ``10 log10(max(mel, 1e-10))`` as PANNs' ``power_to_db``), a ``BatchNorm`` over
  the mel bins (PANNs' ``bn0``), then PANNs-style conv blocks (two ``3x3`` conv + BN + ReLU, then
  ``2x2`` average pooling) of ``channels``; the neck pools as PANNs' CNN14: mean over frequency,
  then max + mean over time, followed by ``Linear + ReLU`` to ``embed_dim`` when given. Defaults
  are for 16 kHz audio: ``n_fft=512, hop=160, 64 mels, 50 Hz - 8 kHz``. It is a CNN14-style network
  (4 blocks instead of 6 by default), not the CNN14 checkpoint.
- :class:`FrameResNet`: a 2-D ResNet (BasicBlock, ``depth`` 10/18/34) run on ``num_frames``
  evenly spaced frames of the clip (all frames when None); its token map is
  ``[N, C, T_frames, H', W']`` and the neck averages over frames and space. The visual teacher of
  the visual-to-audio direction.
- :class:`PrecomputedEmbedding`: the official teacher: the per-video embedding read by the dataset
  (``data_sample.teacher_embedding``, ``[D]``, 512-d CNN14 audio embeddings officially) is stacked
  to ``[N, D]`` and fed to an ``Identity`` ``backbone`` and ``neck``. No head by default;
  ``with_head=True`` adds a ``Linear(D, num_classes)`` (a linear probe, trained with this model
  alone through ``tools/train.py``) so that logit-based baselines (KD) have teacher logits.
- :class:`NullTeacher`: a teacher that does nothing, for distillers with no external teacher (XKD,
  whose teachers are EMAs of the students).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

#: ``depth`` -> blocks per stage (``depth=10`` is the official ``--model_depth 18``)
DEPTHS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


# --- helpers shared with the distillers ---------------------------------------------------------
def gt_labels(data_samples: Optional[Sequence[Any]], device=None, where: str = 'av') -> torch.Tensor:
    """Stack ``data_sample.gt_label`` (LongTensor [1] or an int) of a batch into a LongTensor ``[N]``."""
    if not data_samples:
        raise ValueError(f'{where}: the labels come from data_samples[i].gt_label, but no data samples were given')
    labels = []
    for i, sample in enumerate(data_samples):
        label = getattr(sample, 'gt_label', None)
        if label is None:
            raise KeyError(f"{where}: data_samples[{i}] has no 'gt_label' (the dataset must set it)")
        label = torch.as_tensor(label).reshape(-1)
        if label.numel() != 1:
            raise ValueError(f"{where}: data_samples[{i}].gt_label must hold one class index, got shape "
                             f'{tuple(label.shape)}')
        labels.append(label.long())
    labels = torch.cat(labels)
    return labels.to(device) if device is not None else labels


def flatten_tokens(token_map: torch.Tensor) -> torch.Tensor:
    """``[N, C, *grid]`` -> ``[N, L, C]`` with ``L = prod(grid)`` (row-major over T', H', W')."""
    if token_map.dim() < 3:
        raise ValueError(f'expected a token map [N, C, ...] with at least one grid axis, got {tuple(token_map.shape)}')
    return token_map.flatten(2).transpose(1, 2)


def select_input(inputs: Any, key: str, owner: str) -> torch.Tensor:
    """``inputs[key]`` of the batch dict (a bare tensor is returned as is)."""
    if isinstance(inputs, torch.Tensor):
        return inputs
    if isinstance(inputs, dict):
        if key not in inputs or inputs[key] is None:
            raise KeyError(f"{owner}: the batch inputs have no {key!r} entry (input_key={key!r}; "
                           f"present: {sorted(k for k, v in inputs.items() if v is not None)})")
        return inputs[key]
    raise TypeError(f'{owner}: expected the inputs as a dict or a tensor, got {type(inputs).__name__}')


class GlobalAvgPool(nn.Module):
    """``[N, C, ...]`` -> ``[N, C]``: the mean over every grid axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=2)


class _AVClassifier(BaseModel):
    """The shared ``forward`` / ``loss`` / ``predict`` of the AV networks."""

    def __init__(self, num_classes: Optional[int], input_key: str, data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if input_key not in ('video', 'audio'):
            raise ValueError(f"{type(self).__name__}: input_key must be 'video' or 'audio', got {input_key!r}")
        self.num_classes = num_classes
        self.input_key = input_key

    # subclasses: backbone(x) -> token map; neck(token map) -> [N, D]; head(D) -> logits
    def _backbone_input(self, inputs: Any, data_samples: Optional[list]) -> torch.Tensor:
        return select_input(inputs, self.input_key, type(self).__name__)

    def extract_feat(self, inputs: Any, data_samples: Optional[list] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(token map, pooled feature [N, D])``."""
        tokens = self.backbone(self._backbone_input(inputs, data_samples))
        return tokens, self.neck(tokens)

    def _logits(self, feature: torch.Tensor) -> torch.Tensor:
        head = getattr(self, 'head', None)
        if head is None:
            raise RuntimeError(f'{type(self).__name__} has no head (num_classes / with_head not set): '
                               f'it gives features only')
        return head(feature)

    def forward(self, inputs: Any, data_samples: Optional[list] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            _, feature = self.extract_feat(inputs, data_samples)
            return self._logits(feature) if getattr(self, 'head', None) is not None else feature
        raise ValueError(f"{type(self).__name__}: invalid mode {mode!r}: expected 'loss', 'predict' or 'tensor'")

    def loss(self, inputs: Any, data_samples: Optional[list]) -> dict:
        _, feature = self.extract_feat(inputs, data_samples)
        logits = self._logits(feature)
        labels = gt_labels(data_samples, logits.device, type(self).__name__)
        return dict(loss_cls=F.cross_entropy(logits, labels))

    def predict(self, inputs: Any, data_samples: Optional[list] = None) -> list:
        _, feature = self.extract_feat(inputs, data_samples)
        scores = F.softmax(self._logits(feature), dim=1) if getattr(self, 'head', None) is not None else None
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(feature))]
        for i, sample in enumerate(data_samples):
            if scores is not None:
                sample.pred_score = scores[i].detach()
            sample.pred_feature = feature[i].detach()
        return data_samples


# --- R(2+1)D --------------------------------------------------------------------------------------
def _triple(v: Union[int, Sequence[int]]) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class SpatioTemporalConv(nn.Module):
    """A ``t x k x k`` conv factorised as spatial ``1 x k x k`` -> BN -> ReLU -> temporal ``t x 1 x 1``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        st, sh, sw = _triple(stride)
        pt, ph, pw = _triple(padding)
        mid = int(math.floor(kt * kh * kw * in_channels * out_channels / (kh * kw * in_channels + kt * out_channels)))
        self.mid_channels = mid
        self.spatial_conv = nn.Conv3d(in_channels, mid, (1, kh, kw), stride=(1, sh, sw), padding=(0, ph, pw),
                                      bias=False)
        self.bn = nn.BatchNorm3d(mid)
        self.relu = nn.ReLU(inplace=True)
        self.temporal_conv = nn.Conv3d(mid, out_channels, (kt, 1, 1), stride=(st, 1, 1), padding=(pt, 0, 0),
                                       bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_conv(self.relu(self.bn(self.spatial_conv(x))))


class SpatioTemporalResBlock(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, + shortcut, ReLU (``downsample``: stride 2 and a 1x1x1 shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, downsample: bool = False):
        super().__init__()
        padding = kernel_size // 2
        stride = 2 if downsample else 1
        self.downsample = downsample
        if downsample:
            self.downsampleconv = SpatioTemporalConv(in_channels, out_channels, 1, stride=2)
            self.downsamplebn = nn.BatchNorm3d(out_channels)
        self.conv1 = SpatioTemporalConv(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = SpatioTemporalConv(out_channels, out_channels, kernel_size, padding=padding)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.outrelu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.downsample:
            x = self.downsamplebn(self.downsampleconv(x))
        return self.outrelu(x + res)


class R2Plus1DBackbone(nn.Module):
    """Stem + four stages; output the last stage's token map ``[N, 8c, T/8, H/16, W/16]``."""

    def __init__(self, layer_sizes: Sequence[int] = (1, 1, 1, 1), base_channels: int = 64,
                 out_channels: Optional[int] = None, in_channels: int = 3):
        super().__init__()
        if len(layer_sizes) != 4 or min(layer_sizes) < 1:
            raise ValueError(f'R2Plus1D: layer_sizes must be 4 positive block counts, got {tuple(layer_sizes)}')
        c = base_channels
        widths = [c, 2 * c, 4 * c, out_channels or 8 * c]
        self.out_channels = widths[-1]
        self.conv1 = SpatioTemporalConv(in_channels, c, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
        self.bn1 = nn.BatchNorm3d(c)
        self.relu1 = nn.ReLU(inplace=True)
        stages, prev = [], c
        for i, (width, blocks) in enumerate(zip(widths, layer_sizes)):
            layer = [SpatioTemporalResBlock(prev, width, 3, downsample=i > 0)]
            layer += [SpatioTemporalResBlock(width, width, 3) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            prev = width
        self.conv2, self.conv3, self.conv4, self.conv5 = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f'R2Plus1D: expected video [N, 3, T, H, W], got {tuple(x.shape)}')
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))


class R2Plus1D(_AVClassifier):
    """R(2+1)D video network: token map, pooled feature and logits (see the module docstring).

    Args:
        num_classes: the number of classes of the head.
        input_key: the inputs entry it reads ('video').
        depth: 10 (one block per stage: the official ``--model_depth 18``), 18 or 34.
        layer_sizes: blocks per stage, overriding ``depth``.
        base_channels: the first stage's width (64 officially; 8 for CPU tests).
        feature_dim: the last stage's width, i.e. ``D`` (default ``8 * base_channels``; the official
            ``--vid_dim`` 512).
    """

    def __init__(self, num_classes: int, input_key: str = 'video', depth: int = 10,
                 layer_sizes: Optional[Sequence[int]] = None, base_channels: int = 64,
                 feature_dim: Optional[int] = None, data_preprocessor=None, init_cfg=None):
        super().__init__(num_classes, input_key, data_preprocessor, init_cfg)
        if layer_sizes is None:
            if depth not in DEPTHS:
                raise ValueError(f'R2Plus1D: depth must be one of {sorted(DEPTHS)} (or give layer_sizes), got {depth}')
            layer_sizes = DEPTHS[depth]
        self.backbone = R2Plus1DBackbone(layer_sizes, base_channels, feature_dim)
        self.feature_dim = self.backbone.out_channels
        self.neck = GlobalAvgPool()
        self.head = nn.Linear(self.feature_dim, num_classes)


# --- log-mel audio CNN --------------------------------------------------------------------------
def hz_to_mel(f):
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular HTK mel filters ``[n_fft // 2 + 1, n_mels]`` (peak 1 at each centre, no area norm)."""
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f'mel filterbank: need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, '
                         f'f_max={f_max}, sample_rate={sample_rate}')
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    hz = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                  dtype=torch.float64))
    lower, centre, upper = hz[:-2], hz[1:-1], hz[2:]
    up = (freqs[:, None] - lower[None]) / (centre - lower)[None]
    down = (upper[None] - freqs[:, None]) / (upper - centre)[None]
    return torch.clamp(torch.minimum(up, down), min=0).float()


class LogMelSpectrogram(nn.Module):
    """Waveform ``[N, L]`` -> log-mel ``[N, 1, n_mels, frames]`` in dB (``frames = L // hop + 1``)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 160,
                 n_mels: int = 64, f_min: float = 50.0, f_max: Optional[float] = None, amin: float = 1e-10):
        super().__init__()
        self.n_fft, self.hop_length, self.amin = n_fft, hop_length, amin
        self.register_buffer('window', torch.hann_window(n_fft), persistent=False)
        self.register_buffer('fbank', mel_filterbank(sample_rate, n_fft, n_mels, f_min,
                                                     f_max if f_max is not None else sample_rate / 2),
                             persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() == 3 and wave.shape[1] == 1:
            wave = wave[:, 0]
        if wave.dim() != 2:
            raise ValueError(f'LogMelAudioCNN: expected waveforms [N, L], got {tuple(wave.shape)}')
        if wave.shape[1] <= self.n_fft // 2:
            raise ValueError(f'LogMelAudioCNN: waveforms of {wave.shape[1]} samples are too short for '
                             f'n_fft={self.n_fft} (reflect padding needs more than n_fft // 2)')
        # fp32 with autocast off (--amp): under fp16 autocast (CUDA) the mel projection would run in
        # fp16, where amin = 1e-10 rounds to 0 (silent or band-limited input: log10(0) = -inf) and
        # powers above 65504 overflow; bf16 loses about half a dB. The dB values are in range for
        # the half-precision convs that follow.
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(wave.float(), self.n_fft, self.hop_length, window=self.window.float(),
                              center=True, pad_mode='reflect', return_complex=True)
            power = spec.real ** 2 + spec.imag ** 2  # [N, n_fft // 2 + 1, frames]
            mel = torch.einsum('nft,fm->nmt', power, self.fbank.float())
            return (10.0 * torch.log10(torch.clamp(mel, min=self.amin))).unsqueeze(1)


class ConvBlock2d(nn.Module):
    """PANNs' ConvBlock: (3x3 conv, BN, ReLU) x 2, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, pool: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.pool(F.relu(self.bn2(self.conv2(x))))


class LogMelCNNBackbone(nn.Module):
    """Log-mel front end, BN over mel bins, conv blocks: ``[N, L]`` -> ``[N, C, F', T']``."""

    def __init__(self, channels: Sequence[int] = (64, 128, 256, 512), sample_rate: int = 16000,
                 n_fft: int = 512, hop_length: int = 160, n_mels: int = 64, f_min: float = 50.0,
                 f_max: Optional[float] = None):
        super().__init__()
        self.melspec = LogMelSpectrogram(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
        self.bn0 = nn.BatchNorm2d(n_mels)
        blocks, prev = [], 1
        for width in channels:
            blocks.append(ConvBlock2d(prev, width))
            prev = width
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = prev

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.melspec(wave)  # [N, 1, M, T]
        x = self.bn0(x.transpose(1, 2)).transpose(1, 2)  # BN per mel bin
        return self.blocks(x)


class AudioPool(nn.Module):
    """CNN14's pooling: mean over frequency, then max + mean over time; optional ``Linear + ReLU``."""

    def __init__(self, in_channels: int, embed_dim: Optional[int] = None):
        super().__init__()
        self.fc = nn.Linear(in_channels, embed_dim) if embed_dim else None
        self.out_channels = embed_dim or in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=2)  # [N, C, T']
        x = x.amax(dim=2) + x.mean(dim=2)
        return F.relu(self.fc(x)) if self.fc is not None else x


class LogMelAudioCNN(_AVClassifier):
    """Audio CNN on log-mel spectrograms computed from the waveforms (see the module docstring).

    Args:
        num_classes: classes of the head (None: features only).
        input_key: the inputs entry it reads ('audio').
        channels: widths of the conv blocks (each halves F and T).
        embed_dim: a ``Linear + ReLU`` to this width after pooling (None: the last block's width).
        sample_rate, n_fft, hop_length, n_mels, f_min, f_max: the log-mel front end.
    """

    def __init__(self, num_classes: Optional[int] = None, input_key: str = 'audio',
                 channels: Sequence[int] = (64, 128, 256, 512), embed_dim: Optional[int] = None,
                 sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 160, n_mels: int = 64,
                 f_min: float = 50.0, f_max: Optional[float] = None, data_preprocessor=None, init_cfg=None):
        super().__init__(num_classes, input_key, data_preprocessor, init_cfg)
        self.backbone = LogMelCNNBackbone(channels, sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
        self.neck = AudioPool(self.backbone.out_channels, embed_dim)
        self.feature_dim = self.neck.out_channels
        if num_classes:
            self.head = nn.Linear(self.feature_dim, num_classes)


# --- frame ResNet -------------------------------------------------------------------------------
class BasicBlock2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class FrameResNetBackbone(nn.Module):
    """A 2-D ResNet on frames: ``[N, 3, T, H, W]`` -> ``[N, 8c, T_frames, H/32, W/32]``."""

    def __init__(self, layer_sizes: Sequence[int] = (2, 2, 2, 2), base_channels: int = 64,
                 num_frames: Optional[int] = None, in_channels: int = 3):
        super().__init__()
        c = base_channels
        self.num_frames = num_frames
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, prev = [], c
        for i, blocks in enumerate(layer_sizes):
            width = c * 2 ** i
            layer = [BasicBlock2d(prev, width, 1 if i == 0 else 2)]
            layer += [BasicBlock2d(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            prev = width
        self.layers = nn.Sequential(*stages)
        self.out_channels = prev

    def frame_indices(self, t: int) -> torch.Tensor:
        """``num_frames`` evenly spaced frame indices (centres of equal segments), all when None."""
        if self.num_frames is None or self.num_frames >= t:
            return torch.arange(t)
        return ((torch.arange(self.num_frames) + 0.5) * t / self.num_frames).long()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() == 4:  # images [N, 3, H, W]: one frame
            video = video.unsqueeze(2)
        if video.dim() != 5:
            raise ValueError(f'FrameResNet: expected video [N, 3, T, H, W], got {tuple(video.shape)}')
        n = video.shape[0]
        frames = video[:, :, self.frame_indices(video.shape[2]).to(video.device)]
        t = frames.shape[2]
        x = frames.transpose(1, 2).reshape(n * t, *frames.shape[1:2], *frames.shape[3:])
        x = self.layers(self.stem(x))
        return x.reshape(n, t, *x.shape[1:]).transpose(1, 2)


class FrameResNet(_AVClassifier):
    """Image ResNet on sampled frames: the visual teacher (see the module docstring).

    Args:
        num_classes: classes of the head.
        input_key: the inputs entry it reads ('video').
        depth: 10, 18 (default) or 34 (BasicBlock counts as R(2+1)D's ``DEPTHS``).
        base_channels: the first stage's width (64 for ResNet-18).
        num_frames: frames sampled evenly from the clip (None: all).
    """

    def __init__(self, num_classes: int, input_key: str = 'video', depth: int = 18, base_channels: int = 64,
                 num_frames: Optional[int] = None, data_preprocessor=None, init_cfg=None):
        super().__init__(num_classes, input_key, data_preprocessor, init_cfg)
        if depth not in DEPTHS:
            raise ValueError(f'FrameResNet: depth must be one of {sorted(DEPTHS)}, got {depth}')
        self.backbone = FrameResNetBackbone(DEPTHS[depth], base_channels, num_frames)
        self.neck = GlobalAvgPool()
        self.feature_dim = self.backbone.out_channels
        self.head = nn.Linear(self.feature_dim, num_classes)


# --- pre-extracted embeddings -------------------------------------------------------------------
class PrecomputedEmbedding(_AVClassifier):
    """The teacher whose output is the per-video embedding the dataset read from ``<dir>/<video_id>.npy``.

    Args:
        embed_dim: the embeddings' width (512 for the official CNN14 features); checked per batch.
        num_classes, with_head: ``with_head=True`` adds ``head = Linear(embed_dim, num_classes)``.
        input_key: kept for the common interface (the embeddings come from the data samples).
    """

    def __init__(self, embed_dim: int = 512, num_classes: Optional[int] = None, with_head: bool = False,
                 input_key: str = 'video', data_preprocessor=None, init_cfg=None):
        super().__init__(num_classes, input_key, data_preprocessor, init_cfg)
        self.embed_dim = self.feature_dim = embed_dim
        self.backbone = nn.Identity()
        self.neck = nn.Identity()
        if with_head:
            if not num_classes:
                raise ValueError('PrecomputedEmbedding: with_head=True needs num_classes')
            self.head = nn.Linear(embed_dim, num_classes)
        self.register_buffer('_device_anchor', torch.zeros(()), persistent=False)

    def _backbone_input(self, inputs: Any, data_samples: Optional[list]) -> torch.Tensor:
        if not data_samples:
            raise ValueError("PrecomputedEmbedding: the embeddings come from data_samples[i].teacher_embedding, "
                             "but no data samples were given")
        rows = []
        for i, sample in enumerate(data_samples):
            emb = getattr(sample, 'teacher_embedding', None)
            if emb is None:
                vid = getattr(sample, 'metainfo', {}).get('video_id', '?')
                raise KeyError(f"PrecomputedEmbedding: data_samples[{i}] (video_id={vid!r}) has no "
                               f"'teacher_embedding': configure the dataset's teacher-embedding directory")
            emb = torch.as_tensor(emb).reshape(-1)
            if emb.numel() != self.embed_dim:
                raise ValueError(f'PrecomputedEmbedding: data_samples[{i}].teacher_embedding has {emb.numel()} '
                                 f'values, expected embed_dim={self.embed_dim}')
            rows.append(emb)
        return torch.stack(rows).to(self._device_anchor.device, torch.float32)


class NullTeacher(BaseModel):
    """A teacher with no parameters whose forward returns None (XKD has no external teacher)."""

    def forward(self, inputs: Any = None, data_samples: Optional[list] = None, mode: str = 'tensor'):
        return None


def register(registry):
    """Register this module's components with the plugin's registrar."""
    for cls in (R2Plus1D, LogMelAudioCNN, FrameResNet, PrecomputedEmbedding, NullTeacher):
        registry.model(cls)
