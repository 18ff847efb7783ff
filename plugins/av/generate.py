"""A small generated audio-visual dataset (no download): the default data of the av demo configs.

:func:`make_av_dataset` writes, under ``root``, real files in the official layout that the real
dataset classes (:class:`~kdtoolbox_plugins.av.datasets.AVFrameFolderDataset`,
:class:`~kdtoolbox_plugins.av.datasets.AVVideoFileDataset`) read::

    root/annotation.json                        the official format (see datasets.py)
    root/frames/<video_id>/image_00001.jpg ...  frame folders (num_frames frames, frame_size^2, JPEG)
    root/audio/<video_id>.wav                   mono 16-bit PCM at sample_rate
    root/audio_features/<video_id>.npy          the "teacher" embedding, float32 [embed_dim]
    root/videos/<video_id>.mp4                  the same frames as an MPEG-4 file (PyAV), first
                                                ``num_mp4`` videos of each split
    root/annotations/kinetics_{train,val}.csv   the same split in the Kinetics(-Sound) CSV style
    root/annotations/{trainlist,testlist}01.txt, classInd.txt   ... and in the UCF101 list style
    root/VERSION                                the generator's arguments (written last)

Classes. Class ``k`` of ``K`` has
  * a visual pattern: a sinusoidal grating drifting over time, plus a per-video random phase and
    Gaussian pixel noise (std ``visual_noise``). With ``visual_pairs=True`` (default) classes
    ``2j`` and ``2j + 1`` share their appearance -- orientation ``theta = pi * j / A``, colour hue
    ``j / A``, ``2 + j % 2`` cycles per frame (``A = ceil(K / 2)``) -- and differ only by the
    drift speed, ``pi / 8`` (even k) or ``3 pi / 8`` (odd k) of phase per frame: a temporal cue
    that flips and crops do not change, so the video task is harder than the audio one (where
    every class has its own tone) and a teacher has something to add. With
    ``visual_pairs=False`` every class has its own orientation ``pi k / K``, hue ``k / K`` and
    speed ``(-1)^k (1 + k % 3) pi / 4``;
    The grating spans ``40 + visual_contrast * [0, 1]`` grey levels times the colour (default 180;
    the harder benchmark variant of ``tools/demo.py --suite av`` lowers it and raises the noise);
  * a class-relevant sound: a harmonic tone at ``f_k = 200 * 1.5^k`` Hz (harmonics 1..3 with
    amplitudes 1, 1/2, 1/3, those under 0.45 * sample_rate) under a pulsing envelope of
    ``2 + k`` Hz, with per-video frequency jitter of +-2 % and a random phase.

Noise experiment (the paper's: class-relevant audio mixed with irrelevant audio of other classes).
A fraction ``noisy_fraction`` of the videos (each one independently, drawn from its own stream) has
its audio mixed as ``(1 - noise_ratio) * relevant + noise_ratio * irrelevant`` where *irrelevant* is
the sound of another class drawn uniformly; the rest keeps the relevant sound. A faint white noise
(std 0.01) is added to every track, then it is peak-normalised to 0.9 and written as int16.

Teacher embedding (what a frozen audio teacher would give, precomputed like the official CNN14
``.npy`` files): the log-spectrum of the *written* (so possibly noisy) waveform, pooled into 64
log-spaced bands from 50 Hz to sample_rate / 2 (mean magnitude of the rFFT bins of each band,
then ``log(1 + x)``, then standardised over the bands), times a fixed random projection
``P ~ N(0, 1/64)`` of shape ``[embed_dim, 64]`` drawn from ``seed`` alone (one matrix for all
videos), plus Gaussian noise of std ``embed_noise``. A noisy track therefore gives a teacher
embedding that mixes two classes: the situation MNF is designed for. ``is_noisy`` and the
irrelevant class are recorded in annotation.json (extra keys the dataset ignores).

Determinism: each video has its own stream, ``RandomState(SeedSequence([seed, split, index]))``
(stable across numpy versions); video ``i`` has label ``i % num_classes``; growing a split keeps
the earlier videos. JPEG/MPEG-4 encoding is by OpenCV/FFmpeg (the bytes may differ across library
versions; the decoded values of one installation do not change). Generation writes to a
temporary sibling folder renamed into place when complete, under a file lock; a folder whose
``VERSION`` does not match the arguments is regenerated; a non-empty folder without a marker is
never deleted (error instead).
"""
from __future__ import annotations

import colorsys
import csv
import json
import os
import os.path as osp
import wave

import numpy as np

from kdtoolbox.datasets.generated import generate_once, is_current

__all__ = ['make_av_dataset', 'av_dataset_is_current', 'av_marker', 'class_names', 'render_frames',
           'class_sound', 'spectrum_bands', 'teacher_projection', 'read_wav', 'write_wav',
           'GENERATOR', 'FORMAT_VERSION']

GENERATOR = 'kdtoolbox_plugins.av.generate'
FORMAT_VERSION = 2
SPLITS = {'train': 'training', 'val': 'validation'}  # our split name -> the official subset name
_SPLIT_CODE = {'train': 0, 'val': 1}
NUM_BANDS = 64
_BASE_NAMES = ('beat', 'chirp', 'hum', 'whistle', 'buzz', 'drone', 'ring', 'tick')


def class_names(num_classes: int) -> list[str]:
    """``['beat', 'chirp', ...]``; ``classN`` beyond the eight named ones."""
    return [_BASE_NAMES[k] if k < len(_BASE_NAMES) else f'class{k}' for k in range(num_classes)]


def _rng(seed: int, split: str, index: int) -> np.random.RandomState:
    return np.random.RandomState(np.random.SeedSequence([seed, _SPLIT_CODE[split], index]).generate_state(4))


# ------------------------------------------------------------------------------------ visual
def render_frames(label: int, num_classes: int, num_frames: int, size: int, rng: np.random.RandomState,
                  visual_pairs: bool = True, visual_noise: float = 12.0,
                  visual_contrast: float = 180.0) -> np.ndarray:
    """The frames of one video: uint8 RGB ``[num_frames, size, size, 3]`` (see the module docstring);
    ``visual_contrast``: the grating's amplitude in grey levels (lower: a weaker class signal)."""
    if visual_pairs:
        appearance, num_appearances = label // 2, (num_classes + 1) // 2
        omega = np.pi / 8 if label % 2 == 0 else 3 * np.pi / 8
    else:
        appearance, num_appearances = label, num_classes
        omega = (-1) ** label * (1 + label % 3) * np.pi / 4
    theta = np.pi * appearance / num_appearances
    spatial_freq = 2.0 + (appearance % 2)  # cycles across the frame
    phase0 = rng.uniform(0, 2 * np.pi)
    colour = np.array(colorsys.hsv_to_rgb(appearance / num_appearances, 0.8, 1.0))
    ys, xs = np.mgrid[0:size, 0:size] / size
    coord = xs * np.cos(theta) + ys * np.sin(theta)
    frames = np.empty((num_frames, size, size, 3), np.float64)
    for t in range(num_frames):
        wave_ = 0.5 + 0.5 * np.sin(2 * np.pi * spatial_freq * coord + omega * t + phase0)
        frames[t] = 40 + visual_contrast * wave_[..., None] * colour[None, None, :]
    frames += rng.normal(0, visual_noise, frames.shape)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------- audio
def class_sound(label: int, num_samples: int, sample_rate: int, rng: np.random.RandomState) -> np.ndarray:
    """The class-relevant sound of class ``label``: float64 ``[num_samples]`` in about [-1, 1]."""
    t = np.arange(num_samples) / sample_rate
    f0 = 200.0 * 1.5 ** label * (1 + rng.uniform(-0.02, 0.02))
    phase = rng.uniform(0, 2 * np.pi)
    tone = np.zeros(num_samples)
    for h, amp in ((1, 1.0), (2, 0.5), (3, 1 / 3)):
        if h * f0 < 0.45 * sample_rate:
            tone += amp * np.sin(2 * np.pi * h * f0 * t + h * phase)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * (2 + label) * t + rng.uniform(0, 2 * np.pi))
    return tone * envelope / 1.8


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM (``audio`` in [-1, 1])."""
    pcm = np.clip(np.rint(np.asarray(audio) * 32767), -32768, 32767).astype('<i2')
    with wave.open(path, 'wb') as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """``(float32 waveform in [-1, 1] [L], sample_rate)`` of a PCM wav (8/16/32-bit; channels averaged)."""
    try:
        with wave.open(path, 'rb') as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise ValueError(f'{path}: not a readable PCM wav file ({exc})') from exc
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        data = np.frombuffer(raw, '<i2').astype(np.float32) / 32768
    elif width == 4:
        data = np.frombuffer(raw, '<i4').astype(np.float32) / 2147483648
    else:
        raise ValueError(f'{path}: unsupported sample width {width} bytes (expected 1, 2 or 4)')
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return data.astype(np.float32), rate


def spectrum_bands(audio: np.ndarray, sample_rate: int, num_bands: int = NUM_BANDS) -> np.ndarray:
    """Standardised log band energies ``[num_bands]`` of a waveform (see the module docstring)."""
    mag = np.abs(np.fft.rfft(np.asarray(audio, np.float64)))
    freqs = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    edges = np.geomspace(50.0, sample_rate / 2, num_bands + 1)
    bands = np.empty(num_bands)
    for b in range(num_bands):
        sel = (freqs >= edges[b]) & (freqs < edges[b + 1])
        bands[b] = mag[sel].mean() if sel.any() else 0.0
    logb = np.log1p(bands)
    return (logb - logb.mean()) / (logb.std() + 1e-8)


def teacher_projection(seed: int, embed_dim: int, num_bands: int = NUM_BANDS) -> np.ndarray:
    """The fixed random projection ``[embed_dim, num_bands]`` (from ``seed`` alone)."""
    state = np.random.SeedSequence([seed, 99]).generate_state(4)
    return np.random.RandomState(state).normal(0, 1 / np.sqrt(num_bands), (embed_dim, num_bands))


# ----------------------------------------------------------------------------------- one video
def make_video(split: str, index: int, *, num_classes: int, num_frames: int, fps: int, frame_size: int,
               sample_rate: int, noise_ratio: float, noisy_fraction: float, embed_dim: int,
               embed_noise: float, seed: int, visual_pairs: int = 1, visual_noise: float = 12.0,
               visual_contrast: float = 180.0) -> dict:
    """Everything about one video: id, label, frames, waveform, teacher embedding, noise info."""
    rng = _rng(seed, split, index)
    label = index % num_classes
    names = class_names(num_classes)
    frames = render_frames(label, num_classes, num_frames, frame_size, rng, bool(visual_pairs), visual_noise,
                           visual_contrast)
    num_samples = int(round(num_frames / fps * sample_rate))
    audio = class_sound(label, num_samples, sample_rate, rng)
    noisy = bool(rng.uniform() < noisy_fraction) and num_classes > 1 and noise_ratio > 0
    other = int((label + 1 + rng.randint(num_classes - 1)) % num_classes) if num_classes > 1 else label
    if noisy:
        audio = (1 - noise_ratio) * audio + noise_ratio * class_sound(other, num_samples, sample_rate, rng)
    audio = audio + rng.normal(0, 0.01, num_samples)
    audio = 0.9 * audio / max(np.abs(audio).max(), 1e-8)
    audio = np.clip(np.rint(audio * 32767), -32768, 32767) / 32767  # what the wav file will hold
    proj = teacher_projection(seed, embed_dim)
    embedding = proj @ spectrum_bands(audio, sample_rate) + rng.normal(0, embed_noise, embed_dim)
    video_id = f'v_{names[label]}_{split}_{index:04d}'
    return dict(video_id=video_id, label=label, label_name=names[label], frames=frames, audio=audio,
                embedding=embedding.astype(np.float32), is_noisy=noisy,
                irrelevant_label=names[other] if noisy else None)


def _write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
    try:
        import av
    except ImportError as exc:  # pragma: no cover (av is in tools/requirements.txt)
        raise ImportError('writing the generated mp4 files needs PyAV: pip install av (pinned in '
                          'tools/requirements.txt), or pass num_mp4=0') from exc
    with av.open(path, 'w') as container:
        stream = container.add_stream('mpeg4', rate=int(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = 'yuv420p'
        stream.bit_rate = 2_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# -------------------------------------------------------------------------------- the dataset
def av_marker(**args) -> dict:
    a = _normalise_args(**args)
    for key, default in _OPTIONAL.items():  # added later: recorded only when not default, so
        if a[key] == default:                # datasets written before keep matching
            del a[key]
    return {'generator': GENERATOR, 'format_version': FORMAT_VERSION, 'args': a}


_DEFAULTS = dict(num_classes=4, num_train=48, num_val=16, num_frames=16, fps=8, frame_size=32,
                 sample_rate=16000, noise_ratio=0.5, noisy_fraction=0.5, embed_dim=128, embed_noise=0.1,
                 visual_pairs=1, visual_noise=12.0, num_mp4=4, seed=0, visual_contrast=180.0)
_OPTIONAL = dict(visual_contrast=180.0)


def _normalise_args(**args) -> dict:
    unknown = set(args) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f'make_av_dataset: unknown arguments {sorted(unknown)} (allowed: {sorted(_DEFAULTS)})')
    out = dict(_DEFAULTS, **args)
    floats = {'noise_ratio', 'noisy_fraction', 'embed_noise', 'visual_noise', 'visual_contrast'}
    for key in floats:
        out[key] = float(out[key])
    for key in set(out) - floats:
        out[key] = int(out[key])
    return out


def _check_args(a: dict) -> None:
    if a['num_classes'] < 1:
        raise ValueError(f"num_classes must be >= 1, got {a['num_classes']}")
    if a['num_train'] < 0 or a['num_val'] < 0:
        raise ValueError('num_train and num_val must be >= 0')
    if a['num_frames'] < 1 or a['fps'] < 1:
        raise ValueError('num_frames and fps must be >= 1')
    if a['frame_size'] < 8:
        raise ValueError(f"frame_size must be >= 8, got {a['frame_size']}")
    if not 0.0 <= a['noise_ratio'] <= 1.0 or not 0.0 <= a['noisy_fraction'] <= 1.0:
        raise ValueError('noise_ratio and noisy_fraction must lie in [0, 1]')
    if a['embed_dim'] < 1 or a['embed_noise'] < 0 or a['visual_noise'] < 0:
        raise ValueError('embed_dim must be >= 1, embed_noise and visual_noise >= 0')
    if not 0 < a['visual_contrast'] <= 215:
        raise ValueError(f"visual_contrast must lie in (0, 215], got {a['visual_contrast']}")


def _complete(root: str, a: dict) -> bool:
    return (osp.isfile(osp.join(root, 'annotation.json')) and osp.isdir(osp.join(root, 'frames'))
            and len(os.listdir(osp.join(root, 'frames'))) == a['num_train'] + a['num_val'])


def av_dataset_is_current(root: str, **args) -> bool:
    """True if ``root`` holds a complete dataset generated with exactly these arguments."""
    marker = av_marker(**args)
    return is_current(osp.abspath(root), marker, lambda r: _complete(r, marker['args']))


def _write_all(folder: str, a: dict) -> None:
    import cv2
    names = class_names(a['num_classes'])
    for sub in ('frames', 'audio', 'audio_features', 'videos', 'annotations'):
        os.makedirs(osp.join(folder, sub))
    database = {}
    rows = {'train': [], 'val': []}
    for split in SPLITS:
        for index in range(a[f'num_{split}']):
            v = make_video(split, index, **{k: a[k] for k in a if k not in ('num_train', 'num_val', 'num_mp4')})
            vid = v['video_id']
            fdir = osp.join(folder, 'frames', vid)
            os.makedirs(fdir)
            for t, frame in enumerate(v['frames']):
                path = osp.join(fdir, f'image_{t + 1:05d}.jpg')
                if not cv2.imwrite(path, frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]):
                    raise OSError(f'could not write {path}')
            write_wav(osp.join(folder, 'audio', f'{vid}.wav'), v['audio'], a['sample_rate'])
            np.save(osp.join(folder, 'audio_features', f'{vid}.npy'), v['embedding'])
            if index < a['num_mp4']:
                _write_mp4(osp.join(folder, 'videos', f'{vid}.mp4'), v['frames'], a['fps'])
            entry = {'subset': SPLITS[split], 'label': v['label_name'], 'is_noisy': v['is_noisy']}
            if v['is_noisy']:
                entry['irrelevant_label'] = v['irrelevant_label']
            database[vid] = entry
            rows[split].append(v)
    with open(osp.join(folder, 'annotation.json'), 'w') as f:
        json.dump({'labels': names, 'database': database}, f, indent=1)
    duration = a['num_frames'] / a['fps']
    for split, fname in (('train', 'kinetics_train.csv'), ('val', 'kinetics_val.csv')):
        with open(osp.join(folder, 'annotations', fname), 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split'])
            for v in rows[split]:
                w.writerow([v['label_name'], v['video_id'], 0, f'{duration:g}', SPLITS[split]])
    with open(osp.join(folder, 'annotations', 'classInd.txt'), 'w') as f:
        f.writelines(f'{k + 1} {n}\n' for k, n in enumerate(names))
    with open(osp.join(folder, 'annotations', 'trainlist01.txt'), 'w') as f:
        f.writelines(f"{v['label_name']}/{v['video_id']}.avi {v['label'] + 1}\n" for v in rows['train'])
    with open(osp.join(folder, 'annotations', 'testlist01.txt'), 'w') as f:
        f.writelines(f"{v['label_name']}/{v['video_id']}.avi\n" for v in rows['val'])


def make_av_dataset(root: str, force: bool = False, **args) -> str:
    """Write the generated audio-visual dataset under ``root`` unless it is current; return ``root``.

    Arguments (defaults): num_classes=4, num_train=48, num_val=16, num_frames=16, fps=8,
    frame_size=32, sample_rate=16000, noise_ratio=0.5, noisy_fraction=0.5, embed_dim=128,
    embed_noise=0.1, visual_pairs=1 (classes share appearance in pairs), visual_noise=12 (pixel
    noise std), visual_contrast=180 (grating amplitude; lower: weaker class signal), num_mp4=4 (mp4 files for the first videos of each split; 0: no PyAV needed),
    seed=0. ``force`` regenerates even when current.
    """
    a = _normalise_args(**args)
    _check_args(a)
    root = osp.abspath(root)
    generate_once(root, av_marker(**a), lambda r: _complete(r, a), lambda folder: _write_all(folder, a),
                  'audio-visual dataset', force=force)
    return root
