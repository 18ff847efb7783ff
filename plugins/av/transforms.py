"""Clip sampling and augmentation of the official code, as mmengine transforms (numpy, no torchvision).

Temporal (frame positions are 0-based indices into a video's frame list; ``frame_interval`` s > 1
first keeps every s-th frame, the official ``TemporalSubsampling``):

* :func:`loop_pad` -- the official ``LoopPadding``: repeat the indices cyclically up to ``size``.
* :func:`random_crop` -- ``TemporalRandomCrop`` (training): begin ~ U{0 .. max(0, n - size - 1)}
  (inclusive; official quirk kept: the last possible start, n - size, is never drawn), take
  ``size`` frames, loop-pad a short video.
* :func:`center_crop` -- ``TemporalCenterCrop``: begin = max(0, n // 2 - size // 2).
* :func:`sliding_windows` -- ``SlidingWindow(size, stride)`` (the test protocol, stride 16 =
  size): windows begin at 0, stride, 2*stride, ... < n; the first window that runs past the end is
  loop-padded and is the last. So n = 40, size = stride = 16 gives 3 windows (0-15, 16-31,
  32-39 padded to 32-39,32-39).
* :func:`even_windows` -- ``TemporalEvenCrop(size, n_samples)`` (the official validation during
  training, 3 clips): stride = max(1, ceil((n - 1 - size) / (n_samples - 1))), begins
  0, stride, ...; at most n_samples windows, stopping after the first padded one.

Spatial (the same parameters for every frame of a clip, redrawn per clip -- the official
``randomize_parameters``):

* :class:`AVRandomResizedCrop` -- the torchvision algorithm (10 tries of area fraction ~
  U(scale), log aspect ratio ~ U(log ratio); else a centre crop with the ratio clamped), then
  a bilinear resize to ``size`` x ``size``. Official: scale (0.25, 1), ratio (3/4, 4/3), 112.
* :class:`AVFlip` -- horizontal flip with probability 0.5.
* :class:`AVResize` (shorter side to ``size``, official ``Resize(112)``) and
  :class:`AVCenterCrop` (the test crop).

Loading: :class:`AVSampleClip` (picks ``frame_inds`` unless the dataset fixed them, i.e. a test
window), :class:`AVLoadFrames` (frame folder or video file, by the dataset's ``video_format``),
:class:`AVLoadAudio` (a wav segment aligned with the clip, or the whole track),
:class:`AVLoadTeacherEmbedding` (``<dir>/<video_id>.npy``), then :class:`PackAVInputs`.

Deviation from the official loader: ``VideoLoaderHDF5`` reads ``video_data[i - 1]`` for 0-based
indices, so every clip is shifted one frame back and index 0 reads the video's *last* frame; here
position i is frame i. Images are decoded by OpenCV (PIL in the official code) and resized with
OpenCV's bilinear filter (PIL's in the official code): values differ by rounding.
"""
from __future__ import annotations

import math
import os.path as osp
import random
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform

from .structures import AVDataSample

__all__ = ['loop_pad', 'random_crop', 'center_crop', 'sliding_windows', 'even_windows', 'subsample',
           'AVSampleClip', 'AVLoadFrames', 'AVLoadAudio', 'AVLoadTeacherEmbedding', 'AVRandomResizedCrop',
           'AVFlip', 'AVResize', 'AVCenterCrop', 'PackAVInputs', 'TRANSFORMS', 'decode_video_file']


# ------------------------------------------------------------------------------- temporal
def loop_pad(indices: Sequence[int], size: int) -> list[int]:
    out = list(indices)
    if not out:
        raise ValueError('loop_pad: no frame to pad from (empty video)')
    i = 0
    while len(out) < size:
        out.append(out[i])
        i += 1
    return out


def subsample(indices: Sequence[int], interval: int) -> list[int]:
    if interval < 1:
        raise ValueError(f'frame_interval must be >= 1, got {interval}')
    return list(indices)[::interval]


def random_crop(indices: Sequence[int], size: int, rng: Optional[random.Random] = None) -> list[int]:
    indices = list(indices)
    rand_end = max(0, len(indices) - size - 1)
    begin = (rng or random).randint(0, rand_end)
    out = indices[begin:begin + size]
    return loop_pad(out, size) if len(out) < size else out


def center_crop(indices: Sequence[int], size: int) -> list[int]:
    indices = list(indices)
    begin = max(0, len(indices) // 2 - size // 2)
    out = indices[begin:begin + size]
    return loop_pad(out, size) if len(out) < size else out


def _window(indices: list[int], begin_pos: int, size: int) -> tuple[list[int], bool]:
    out = indices[begin_pos:begin_pos + size]
    return (loop_pad(out, size), True) if len(out) < size else (out, False)


def sliding_windows(indices: Sequence[int], size: int, stride: int = 0) -> list[list[int]]:
    """The official ``SlidingWindow`` over positions of ``indices`` (stride 0 means ``size``)."""
    indices = list(indices)
    if not indices:
        raise ValueError('sliding_windows: empty video')
    stride = stride or size
    out = []
    for begin in range(0, len(indices), stride):
        window, padded = _window(indices, begin, size)
        out.append(window)
        if padded:
            break
    return out


def even_windows(indices: Sequence[int], size: int, n_samples: int) -> list[list[int]]:
    """The official ``TemporalEvenCrop``: at most ``n_samples`` evenly spaced windows."""
    indices = list(indices)
    if not indices:
        raise ValueError('even_windows: empty video')
    if n_samples < 1:
        raise ValueError(f'even_windows: n_samples must be >= 1, got {n_samples}')
    n = len(indices)
    stride = 1 if n_samples == 1 else max(1, math.ceil((n - 1 - size) / (n_samples - 1)))
    out = []
    for begin in range(0, n, stride):
        if len(out) >= n_samples:
            break
        window, padded = _window(indices, begin, size)
        out.append(window)
        if padded:
            break
    return out


class AVSampleClip(BaseTransform):
    """Choose ``frame_inds`` (positions into the frame list) for a training clip.

    Reads ``num_frames``, ``clip_len`` and ``frame_interval`` from the dataset's info; a test window
    (``frame_inds`` already set by the dataset) passes through unchanged.

    Args:
        mode: 'random' (official training) or 'center'.
    """

    def __init__(self, mode: str = 'random'):
        if mode not in ('random', 'center'):
            raise ValueError(f"AVSampleClip: mode must be 'random' or 'center', got {mode!r}")
        self.mode = mode

    def transform(self, results: dict) -> dict:
        if results.get('frame_inds') is not None:
            return results
        for key in ('num_frames', 'clip_len'):
            if key not in results:
                raise KeyError(f'AVSampleClip: the dataset info lacks {key!r} (video {results.get("video_id")})')
        positions = subsample(range(results['num_frames']), results.get('frame_interval', 1))
        if self.mode == 'random':
            results['frame_inds'] = random_crop(positions, results['clip_len'])
        else:
            results['frame_inds'] = center_crop(positions, results['clip_len'])
        return results


# ------------------------------------------------------------------------------- loading
def decode_video_file(path: str, positions: Sequence[int], fps: float) -> np.ndarray:
    """Frames of a video file at times ``position / fps``, decoded with PyAV: for each time, the last
    frame whose timestamp is not later (the first frame before it starts, the last one after it
    ends): uint8 RGB ``[len(positions), H, W, 3]``."""
    import av
    last_time = max(int(p) for p in positions) / fps
    times: list[float] = []
    frames: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or fps)
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else (times[-1] + 1 / rate if times else 0.0)
                if times and t > last_time + 1e-6:
                    break  # every wanted time is covered by the frames already decoded
                times.append(t)
                frames.append(frame.to_ndarray(format='rgb24'))
    except (av.error.FFmpegError, IndexError) as exc:
        raise OSError(f'{path}: cannot decode the video with PyAV ({exc})') from exc
    if not frames:
        raise OSError(f'{path}: no video frame could be decoded')
    stamps = np.asarray(times)
    picks = [max(0, int(np.searchsorted(stamps, int(p) / fps + 1e-6, side='right')) - 1) for p in positions]
    return np.stack([frames[i] for i in picks])


def video_file_num_frames(path: str, fps: float) -> int:
    """How many frames a video file has when sampled at ``fps`` (from its duration; decodes the
    file when the container does not say)."""
    import av
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1e6
            if duration is None or duration <= 0:
                times = [float(f.time) for f in container.decode(stream) if f.time is not None]
                rate = float(stream.average_rate or fps)
                duration = (max(times) + 1 / rate) if times else 0.0
    except (av.error.FFmpegError, IndexError) as exc:
        raise OSError(f'{path}: cannot open the video with PyAV ({exc})') from exc
    return max(1, int(math.floor(duration * fps + 1e-6)))


class AVLoadFrames(BaseTransform):
    """Load ``frame_inds`` into ``imgs`` (uint8 RGB ``[T, H, W, 3]``).

    ``video_format`` 'frames': ``<video_path>/<filename_tmpl.format(start_index + position)>``
    (3D-ResNets-PyTorch's ``image_00001.jpg`` convention by default); 'file': a video file decoded
    with PyAV at the dataset's ``fps``.
    """

    def transform(self, results: dict) -> dict:
        inds = results['frame_inds']
        path = results['video_path']
        if results.get('video_format', 'frames') == 'file':
            imgs = decode_video_file(path, inds, results['fps'])
        else:
            tmpl, start = results.get('filename_tmpl', 'image_{:05d}.jpg'), results.get('start_index', 1)
            cache: dict[int, np.ndarray] = {}
            frames = []
            for p in inds:
                if p not in cache:
                    file = osp.join(path, tmpl.format(start + p))
                    img = cv2.imread(file, cv2.IMREAD_COLOR)
                    if img is None:
                        raise FileNotFoundError(f'AVLoadFrames: cannot read frame {file} '
                                                f'(video {results.get("video_id")}, position {p})')
                    cache[p] = img[..., ::-1]
                frames.append(cache[p])
            shapes = {f.shape for f in frames}
            if len(shapes) != 1:
                raise ValueError(f'AVLoadFrames: the frames of {path} differ in size: {sorted(shapes)}')
            imgs = np.stack(frames)
        results['imgs'] = np.ascontiguousarray(imgs)
        results['img_shape'] = imgs.shape[1:3]
        return results


class AVLoadAudio(BaseTransform):
    """Load the waveform of ``audio_path`` (a PCM wav) into ``audio`` (float32 [L]).

    Args:
        mode: 'clip' -- the segment that the sampled frames cover, from ``frame_inds[0] / fps`` for
            ``clip_len * frame_interval / fps`` seconds (a loop-padded clip keeps this length);
            'video' -- the whole track from 0.
        seconds: the output length in seconds (default: the clip's duration in 'clip' mode; the
            track's length in 'video' mode, which only batches when all tracks are equally long).
        sample_rate: the output rate (16 kHz); a file at another rate is resampled linearly.
    Short segments are zero-padded at the end. Samples with no ``audio_path`` pass through.
    """

    def __init__(self, mode: str = 'clip', seconds: Optional[float] = None, sample_rate: int = 16000):
        if mode not in ('clip', 'video'):
            raise ValueError(f"AVLoadAudio: mode must be 'clip' or 'video', got {mode!r}")
        self.mode, self.seconds, self.sample_rate = mode, seconds, int(sample_rate)

    def transform(self, results: dict) -> dict:
        path = results.get('audio_path')
        if path is None:
            return results
        from .generate import read_wav
        if not osp.isfile(path):
            raise FileNotFoundError(f'AVLoadAudio: no audio file {path} for video {results.get("video_id")}')
        wav, rate = read_wav(path)
        sr = self.sample_rate
        if rate != sr and len(wav) > 1:
            n_out = int(round(len(wav) * sr / rate))
            wav = np.interp(np.arange(n_out) * rate / sr, np.arange(len(wav)), wav).astype(np.float32)
        if self.mode == 'clip':
            fps = float(results['fps'])
            start = int(round(results['frame_inds'][0] / fps * sr))
            default = results['clip_len'] * results.get('frame_interval', 1) / fps
        else:
            start, default = 0, len(wav) / sr
        length = int(round((self.seconds if self.seconds is not None else default) * sr))
        seg = wav[start:start + length]
        if len(seg) < length:
            seg = np.concatenate([seg, np.zeros(length - len(seg), np.float32)])
        results['audio'] = np.ascontiguousarray(seg, dtype=np.float32)
        return results


class AVLoadTeacherEmbedding(BaseTransform):
    """``teacher_embedding`` = ``np.load(teacher_path)`` flattened to float32 [D] (official:
    the whole per-video vector, whatever the clip). Samples with no ``teacher_path`` pass."""

    def transform(self, results: dict) -> dict:
        path = results.get('teacher_path')
        if path is None:
            return results
        try:
            emb = np.load(path)
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f'AVLoadTeacherEmbedding: cannot read the teacher embedding {path} '
                                    f'of video {results.get("video_id")}: {exc}') from exc
        emb = np.asarray(emb, np.float32)
        if emb.ndim == 2 and emb.shape[0] == 1:
            emb = emb[0]
        if emb.ndim != 1:
            raise ValueError(f'AVLoadTeacherEmbedding: {path} holds shape {emb.shape}; expected a vector [D]')
        results['teacher_embedding'] = emb
        return results


# ------------------------------------------------------------------------------- spatial
def _resize(imgs: np.ndarray, w: int, h: int) -> np.ndarray:
    if imgs.shape[1] == h and imgs.shape[2] == w:
        return imgs
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in imgs])


class AVRandomResizedCrop(BaseTransform):
    """One random crop for the whole clip (torchvision's algorithm), resized to ``size``."""

    def __init__(self, size: int = 112, scale: Sequence[float] = (0.25, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3)):
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f'AVRandomResizedCrop: bad scale {scale} or ratio {ratio}')
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)

    def get_params(self, h: int, w: int) -> tuple[int, int, int, int]:
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * np.random.uniform(*self.scale)
            ar = math.exp(np.random.uniform(*log_ratio))
            cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                return np.random.randint(0, h - ch + 1), np.random.randint(0, w - cw + 1), ch, cw
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def transform(self, results: dict) -> dict:
        imgs = results['imgs']
        top, left, ch, cw = self.get_params(*imgs.shape[1:3])
        results['imgs'] = _resize(imgs[:, top:top + ch, left:left + cw], self.size, self.size)
        results['crop_box'] = (left, top, left + cw, top + ch)
        results['img_shape'] = (self.size, self.size)
        return results


class AVFlip(BaseTransform):
    """Flip the whole clip horizontally with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        if not 0 <= prob <= 1:
            raise ValueError(f'AVFlip: prob must be in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        flip = np.random.rand() < self.prob
        if flip:
            results['imgs'] = np.ascontiguousarray(results['imgs'][:, :, ::-1])
        results['flip'] = bool(flip)
        return results


class AVResize(BaseTransform):
    """Resize the clip so that its shorter side is ``size`` (the official ``Resize(int)``)."""

    def __init__(self, size: int = 112):
        self.size = int(size)

    def transform(self, results: dict) -> dict:
        imgs = results['imgs']
        h, w = imgs.shape[1:3]
        if h <= w:
            nh, nw = self.size, int(self.size * w / h)
        else:
            nw, nh = self.size, int(self.size * h / w)
        results['imgs'] = _resize(imgs, nw, nh)
        results['img_shape'] = (nh, nw)
        return results


class AVCenterCrop(BaseTransform):
    """Crop the central ``size`` x ``size`` region (the official ``CenterCrop``, rounding to nearest)."""

    def __init__(self, size: int = 112):
        self.size = int(size)

    def transform(self, results: dict) -> dict:
        imgs = results['imgs']
        h, w = imgs.shape[1:3]
        if h < self.size or w < self.size:
            raise ValueError(f'AVCenterCrop: clip of video {results.get("video_id")} is {h}x{w}, smaller than '
                             f'the crop {self.size} (resize first with AVResize)')
        top, left = int(round((h - self.size) / 2)), int(round((w - self.size) / 2))
        results['imgs'] = np.ascontiguousarray(imgs[:, top:top + self.size, left:left + self.size])
        results['img_shape'] = (self.size, self.size)
        return results


# ------------------------------------------------------------------------------- packing
class PackAVInputs(BaseTransform):
    """``dict(inputs=dict(video=uint8 [3, T, H, W], audio=float32 [L]), data_samples=AVDataSample)``.

    Args:
        meta_keys: info keys copied into the sample's metainfo (those present); ``sample_idx`` (the
            dataset index, set by mmengine's ``BaseDataset``) is what CRD's memory bank is indexed by.
    """

    def __init__(self, meta_keys: Sequence[str] = ('video_id', 'window_index', 'num_windows', 'label_name',
                                                   'sample_idx', 'frame_inds', 'img_shape', 'flip')):
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        inputs = {}
        if 'imgs' in results:
            inputs['video'] = torch.from_numpy(np.ascontiguousarray(results['imgs'])).permute(3, 0, 1, 2).contiguous()
        if 'audio' in results:
            inputs['audio'] = torch.from_numpy(np.ascontiguousarray(results['audio'], dtype=np.float32))
        if not inputs:
            raise KeyError(f'PackAVInputs: video {results.get("video_id")} has neither frames nor audio '
                           f'(add AVLoadFrames and/or AVLoadAudio to the pipeline)')
        sample = AVDataSample()
        if 'gt_label' not in results:
            raise KeyError(f'PackAVInputs: video {results.get("video_id")} has no gt_label')
        sample.gt_label = results['gt_label']
        if 'teacher_embedding' in results:
            sample.teacher_embedding = results['teacher_embedding']
        meta = {k: results[k] for k in self.meta_keys if k in results}
        meta.setdefault('window_index', 0)
        meta.setdefault('num_windows', 1)
        if 'frame_inds' in meta:
            meta['frame_inds'] = [int(i) for i in meta['frame_inds']]
        sample.set_metainfo(meta)
        return {'inputs': inputs, 'data_samples': sample}


TRANSFORMS = (AVSampleClip, AVLoadFrames, AVLoadAudio, AVLoadTeacherEmbedding, AVRandomResizedCrop, AVFlip,
              AVResize, AVCenterCrop, PackAVInputs)
