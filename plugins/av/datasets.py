"""Audio-visual datasets: frame folders (the official layout) and video files (PyAV).

Annotation formats (``ann_format``; 'auto' picks by the file extension):

* ``'json'`` (.json) -- what the official code reads, for UCF51 and ActivityNet alike
  (``datasets/{ucf_51,activitynet}/annotation.json``, ActivityNet style)::

      {"labels": ["ApplyEyeMakeup", ...],
       "database": {"v_ApplyEyeMakeup_g08_c01": {"subset": "training", "label": "ApplyEyeMakeup"},
                    "v_bWquUXC2Te8_1": {"subset": "validation", "label": "Shaving",
                                        "segment": [43.5, 46.7]}, ...}}

  ``subset`` selects the entries (default 'training', or 'validation' when ``test_mode``); class
  indices follow ``labels``. Extra keys (``segment``, ...) are ignored.
* ``'kinetics_csv'`` (.csv) -- the Kinetics(-Sound) CSV with the header
  ``label,youtube_id,time_start,time_end,split``; the video id is
  ``kinetics_id_tmpl.format(youtube_id=..., time_start=int, time_end=int)``, by default
  ``'{youtube_id}_{time_start:06d}_{time_end:06d}'`` (the Kinetics downloader's file names). Rows
  whose ``split`` differs from ``subset`` are dropped (no filter when ``subset`` is None or the
  column is absent). Kinetics-Sound is the subset of Kinetics classes given by ``classes`` (rows of
  other classes are dropped); without ``classes`` the sorted labels of the file are the classes.
* ``'ucf_list'`` (.txt) -- UCF101's ``trainlist01.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``,
  1-based label) or ``testlist01.txt`` (no label: the class is the folder), with the class list
  ``class_index_file`` (``classInd.txt``: ``1 ApplyEyeMakeup``). The video id is the file stem.
  UCF51 (the 51 UCF101 classes with audio) is ``classes=`` those names.

With every format, ``classes`` (a list of names) restricts and orders the classes.

Files of a video ``<id>`` (paths under ``data_root``; ``data_prefix`` keys):

* ``video``: the frame folder ``<video>/<frame_dir_tmpl>`` with ``image_00001.jpg``, ... (16 frames
  of 4-fps dumps at 112 x 112 in the paper's data; 3D-ResNets-PyTorch naming, 1-based), or the
  video file ``<video>/<video_file_tmpl>`` (``{video_id}.mp4``) for :class:`AVVideoFileDataset`.
  The official repository stores the same frames as one HDF5 file per video (JPEG bytes in
  dataset ``video``); extract them to folders (HDF5 is not read here: no h5py dependency).
  Templates may use ``{video_id}``, ``{label_name}`` and ``{rel_stem}`` (the UCF list path
  without extension, e.g. ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01``).
* ``audio`` (optional): ``<audio>/<id>.wav``, PCM, read by :class:`AVLoadAudio`.
* ``teacher`` (optional): ``<teacher>/<id>.npy``, the precomputed teacher embedding [D] (official:
  ``audio_features/<id>.npy``, 512-d CNN14 embeddings).

A missing file is an error naming the file and the annotation entry (``on_missing='skip'`` drops
the video with one warning instead; the official code skips silently).

Test protocol (``test_mode=True``): every video becomes ``num_windows`` items, one per window of
``test_windows`` -- ``dict(type='sliding', stride=0)`` (the official inference: windows of
``clip_len`` with stride ``clip_len``), ``dict(type='even', num=3)`` (the official validation
during training) or ``dict(type='center')`` (one window) -- each with metainfo ``video_id``,
``window_index``, ``num_windows``; :class:`VideoAccuracy` and :class:`RetrievalMetric` average the
windows of a video. Training items are one per video with a random clip (:class:`AVSampleClip`).

``generate=dict(...)`` writes the generated dataset (:func:`make_av_dataset` arguments) under
``data_root`` first (a no-op when it is current).
"""
from __future__ import annotations

import csv
import json
import os
import os.path as osp
import warnings
from typing import Optional, Sequence

from mmengine.dataset import BaseDataset

from .transforms import center_crop, even_windows, sliding_windows, subsample, video_file_num_frames

__all__ = ['AVBaseDataset', 'AVFrameFolderDataset', 'AVVideoFileDataset', 'parse_annotations']


def _fail(ann_file: str, msg: str) -> ValueError:
    return ValueError(f'{ann_file}: {msg}')


def parse_annotations(ann_file: str, ann_format: str = 'auto', subset: Optional[str] = None,
                      classes: Optional[Sequence[str]] = None, class_index_file: Optional[str] = None,
                      kinetics_id_tmpl: str = '{youtube_id}_{time_start:06d}_{time_end:06d}'
                      ) -> tuple[list[str], list[dict]]:
    """Read an annotation file: ``(class names, [dict(video_id, label, label_name, rel_stem)])``."""
    if ann_format == 'auto':
        ext = osp.splitext(ann_file)[1].lower()
        ann_format = {'.json': 'json', '.csv': 'kinetics_csv', '.txt': 'ucf_list'}.get(ext)
        if ann_format is None:
            raise _fail(ann_file, f"cannot tell the annotation format from the extension {ext!r}: set "
                                  f"ann_format to 'json', 'kinetics_csv' or 'ucf_list'")
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    entries: list[tuple[str, str, str]] = []  # (video_id, label_name, rel_stem)
    if ann_format == 'json':
        with open(ann_file) as f:
            try:
                data = json.load(f)
            except ValueError as exc:
                raise _fail(ann_file, f'not valid JSON ({exc})') from exc
        for key in ('labels', 'database'):
            if key not in data:
                raise _fail(ann_file, f"missing the key {key!r} (expected {{'labels': [...], 'database': {{...}}}})")
        all_classes = list(data['labels'])
        for vid, info in data['database'].items():
            if subset is not None and info.get('subset') != subset:
                continue
            if 'label' not in info:
                raise _fail(ann_file, f"database[{vid!r}] has no 'label'")
            if info['label'] not in all_classes:
                raise _fail(ann_file, f"database[{vid!r}]['label'] = {info['label']!r} is not in 'labels'")
            entries.append((vid, info['label'], vid))
    elif ann_format == 'kinetics_csv':
        with open(ann_file, newline='') as f:
            reader = csv.DictReader(f)
            need = {'label', 'youtube_id', 'time_start', 'time_end'}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise _fail(ann_file, f'the CSV header must have {sorted(need)} (and optionally split); '
                                      f'got {reader.fieldnames}')
            for line, row in enumerate(reader, start=2):
                if subset is not None and 'split' in row and row['split'] != subset:
                    continue
                try:
                    vid = kinetics_id_tmpl.format(youtube_id=row['youtube_id'],
                                                  time_start=int(float(row['time_start'])),
                                                  time_end=int(float(row['time_end'])))
                except ValueError as exc:
                    raise _fail(ann_file, f'line {line}: bad time_start/time_end ({exc})') from exc
                entries.append((vid, row['label'], vid))
        all_classes = sorted({e[1] for e in entries})
    elif ann_format == 'ucf_list':
        if class_index_file is None:
            raise _fail(ann_file, "the 'ucf_list' format needs class_index_file (classInd.txt)")
        if not osp.isfile(class_index_file):
            raise FileNotFoundError(f'class index file not found: {class_index_file}')
        index_to_name = {}
        with open(class_index_file) as f:
            for line, text in enumerate(f, start=1):
                parts = text.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[0].isdigit():
                    raise _fail(class_index_file, f'line {line}: expected "<index> <class name>", got {text.strip()!r}')
                index_to_name[int(parts[0])] = parts[1]
        all_classes = [index_to_name[k] for k in sorted(index_to_name)]
        with open(ann_file) as f:
            for line, text in enumerate(f, start=1):
                parts = text.split()
                if not parts:
                    continue
                rel = parts[0]
                stem = osp.splitext(rel)[0]
                if len(parts) > 1:
                    if not parts[1].isdigit() or int(parts[1]) not in index_to_name:
                        raise _fail(ann_file, f'line {line}: label {parts[1]!r} is not in {class_index_file}')
                    name = index_to_name[int(parts[1])]
                else:
                    name = rel.split('/')[0] if '/' in rel else None
                    if name not in all_classes:
                        raise _fail(ann_file, f'line {line}: no label and the folder {name!r} is not a class')
                entries.append((osp.basename(stem), name, stem))
    else:
        raise ValueError(f"ann_format must be 'auto', 'json', 'kinetics_csv' or 'ucf_list', got {ann_format!r}")
    if classes is not None:
        unknown = [c for c in classes if c not in all_classes] if ann_format != 'kinetics_csv' else []
        if unknown:
            raise _fail(ann_file, f'classes {unknown} are not in the annotation classes')
        all_classes = list(classes)
    to_index = {c: i for i, c in enumerate(all_classes)}
    seen = set()
    out = []
    for vid, name, stem in entries:
        if name not in to_index:
            continue  # a class outside ``classes`` (e.g. Kinetics-Sound out of Kinetics)
        if vid in seen:
            raise _fail(ann_file, f'video {vid!r} is listed twice')
        seen.add(vid)
        out.append(dict(video_id=vid, label=to_index[name], label_name=name, rel_stem=stem))
    return all_classes, out


class AVBaseDataset(BaseDataset):
    """Shared logic of the audio-visual datasets (see the module docstring).

    Args:
        ann_file: the annotation file (joined to ``data_root``).
        data_prefix: ``video`` (frames or video files), optional ``audio`` (wav folder) and
            ``teacher`` (npy folder), joined to ``data_root``.
        ann_format, subset, classes, class_index_file, kinetics_id_tmpl: see
            :func:`parse_annotations`.
        clip_len: frames per clip (16). frame_interval: keep every n-th frame first (1).
        fps: the frame rate of the frame dumps / the rate video files are sampled at (4); used to
            align the audio segment with the clip.
        test_windows: the test protocol (see the module docstring).
        on_missing: 'error' or 'skip' for videos whose files are missing.
        generate: arguments of :func:`make_av_dataset` to generate the data under ``data_root``.
    """

    video_format = 'frames'

    def __init__(self, ann_file: str = 'annotation.json', data_root: str = '',
                 data_prefix: Optional[dict] = None, ann_format: str = 'auto', subset: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None, class_index_file: Optional[str] = None,
                 kinetics_id_tmpl: str = '{youtube_id}_{time_start:06d}_{time_end:06d}',
                 clip_len: int = 16, frame_interval: int = 1, fps: float = 4,
                 test_windows: Optional[dict] = None, on_missing: str = 'error',
                 generate: Optional[dict] = None, **kwargs):
        if on_missing not in ('error', 'skip'):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
        if clip_len < 1 or frame_interval < 1 or fps <= 0:
            raise ValueError(f'clip_len and frame_interval must be >= 1 and fps > 0, got {clip_len}, '
                             f'{frame_interval}, {fps}')
        test_windows = dict(test_windows or dict(type='sliding', stride=0))
        if test_windows.get('type') not in ('sliding', 'even', 'center'):
            raise ValueError(f"test_windows.type must be 'sliding', 'even' or 'center', "
                             f"got {test_windows.get('type')!r}")
        self.ann_format, self.subset, self.classes_arg = ann_format, subset, classes
        self.class_index_file, self.kinetics_id_tmpl = class_index_file, kinetics_id_tmpl
        self.clip_len, self.frame_interval, self.fps = int(clip_len), int(frame_interval), float(fps)
        self.test_windows, self.on_missing = test_windows, on_missing
        if generate is not None:
            if not data_root:
                raise ValueError('generate=... needs data_root (where to write the generated dataset)')
            from .generate import make_av_dataset
            make_av_dataset(data_root, **generate)
        data_prefix = dict(data_prefix if data_prefix is not None else dict(video=self.default_video_prefix))
        unknown = set(data_prefix) - {'video', 'audio', 'teacher'}
        if unknown:
            raise KeyError(f"data_prefix: unknown keys {sorted(unknown)} (allowed: 'video', 'audio', 'teacher')")
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix, **kwargs)

    default_video_prefix = 'frames'

    # --- per-format hooks --------------------------------------------------------------
    def video_path(self, entry: dict) -> str:
        raise NotImplementedError

    def count_frames(self, path: str) -> int:
        raise NotImplementedError

    # --- mmengine BaseDataset ----------------------------------------------------------
    def _join(self, path: Optional[str]) -> Optional[str]:
        if path is None or osp.isabs(path) or not self.data_root:
            return path
        return osp.join(self.data_root, path)

    def load_data_list(self) -> list[dict]:
        subset = self.subset
        if subset is None and (self.ann_format == 'json' or str(self.ann_file).endswith('.json')):
            subset = 'validation' if self.test_mode else 'training'
        classes, entries = parse_annotations(self.ann_file, self.ann_format, subset, self.classes_arg,
                                             self._join(self.class_index_file), self.kinetics_id_tmpl)
        self._metainfo['classes'] = tuple(classes)
        if not entries:
            raise ValueError(f'{self.ann_file}: no video in subset {subset!r}')
        audio_dir, teacher_dir = self.data_prefix.get('audio'), self.data_prefix.get('teacher')
        data_list, missing = [], []
        for e in entries:
            info = dict(video_id=e['video_id'], gt_label=e['label'], label_name=e['label_name'],
                        video_format=self.video_format, fps=self.fps, clip_len=self.clip_len,
                        frame_interval=self.frame_interval, **self.extra_info())
            info['video_path'] = self.video_path(e)
            paths = [info['video_path']]
            if audio_dir:
                info['audio_path'] = osp.join(audio_dir, f"{e['video_id']}.wav")
                paths.append(info['audio_path'])
            if teacher_dir:
                info['teacher_path'] = osp.join(teacher_dir, f"{e['video_id']}.npy")
                paths.append(info['teacher_path'])
            absent = [p for p in paths if not osp.exists(p)]
            n = self.count_frames(info['video_path']) if not absent else 0
            if not absent and n < 1:
                absent = [f"{info['video_path']} (no frame)"]
            if absent:
                if self.on_missing == 'error':
                    raise FileNotFoundError(f"{self.ann_file}: video {e['video_id']!r}: missing {', '.join(absent)} "
                                            f"(on_missing='skip' drops such videos)")
                missing.append(e['video_id'])
                continue
            info['num_frames'] = n
            if not self.test_mode:
                data_list.append(info)
                continue
            positions = subsample(range(n), self.frame_interval)
            kind = self.test_windows['type']
            if kind == 'sliding':
                windows = sliding_windows(positions, self.clip_len, int(self.test_windows.get('stride', 0)))
            elif kind == 'even':
                windows = even_windows(positions, self.clip_len, int(self.test_windows.get('num', 3)))
            else:
                windows = [center_crop(positions, self.clip_len)]
            for w, inds in enumerate(windows):
                data_list.append(dict(info, frame_inds=inds, window_index=w, num_windows=len(windows)))
        if missing:
            warnings.warn(f'{self.ann_file}: skipped {len(missing)} videos with missing files '
                          f'(first: {missing[:3]})', stacklevel=2)
        if not data_list:
            raise ValueError(f'{self.ann_file}: no video left after skipping those with missing files')
        return data_list

    def extra_info(self) -> dict:
        return {}

    @property
    def num_videos(self) -> int:
        """Distinct videos (test mode has several items per video)."""
        return len({self.get_data_info(i)['video_id'] for i in range(len(self))})


class AVFrameFolderDataset(AVBaseDataset):
    """Frame folders: ``<data_root>/<data_prefix.video>/<frame_dir_tmpl>/<filename_tmpl>``.

    Args:
        frame_dir_tmpl: the folder of a video (``'{video_id}'``; ``'{label_name}/{video_id}'`` for
            the UCF101 ``jpg/<class>/<video>`` tree).
        filename_tmpl: frame file names, formatted with ``start_index + position``
            (``'image_{:05d}.jpg'``, start_index 1: 3D-ResNets-PyTorch's dumps).
        **kwargs: :class:`AVBaseDataset`'s.
    """

    video_format = 'frames'
    default_video_prefix = 'frames'

    def __init__(self, *args, frame_dir_tmpl: str = '{video_id}', filename_tmpl: str = 'image_{:05d}.jpg',
                 start_index: int = 1, **kwargs):
        self.frame_dir_tmpl, self.filename_tmpl, self.start_index = frame_dir_tmpl, filename_tmpl, int(start_index)
        super().__init__(*args, **kwargs)

    def video_path(self, entry: dict) -> str:
        rel = self.frame_dir_tmpl.format(video_id=entry['video_id'], label_name=entry['label_name'],
                                         rel_stem=entry['rel_stem'])
        return osp.join(self.data_prefix.get('video', ''), rel)

    def count_frames(self, path: str) -> int:
        """Consecutive frames from ``start_index`` (a gap ends the video)."""
        if not osp.isdir(path):
            return 0
        present = set(os.listdir(path))
        n = 0
        while self.filename_tmpl.format(self.start_index + n) in present:
            n += 1
        return n

    def extra_info(self) -> dict:
        return dict(filename_tmpl=self.filename_tmpl, start_index=self.start_index)


class AVVideoFileDataset(AVBaseDataset):
    """Video files decoded with PyAV (``pip install av``), sampled at ``fps`` frames per second
    (frame position k = the frame shown at time k / fps): the same clips as the frame dumps.

    Args:
        video_file_tmpl: ``'{video_id}.mp4'`` (``'{rel_stem}.avi'`` for UCF101's tree).
        **kwargs: :class:`AVBaseDataset`'s.
    """

    video_format = 'file'
    default_video_prefix = 'videos'

    def __init__(self, *args, video_file_tmpl: str = '{video_id}.mp4', **kwargs):
        try:
            import av  # noqa: F401
        except ImportError as exc:
            raise ImportError('AVVideoFileDataset needs PyAV: pip install av '
                              '(pinned in tools/requirements.txt)') from exc
        self.video_file_tmpl = video_file_tmpl
        super().__init__(*args, **kwargs)

    def video_path(self, entry: dict) -> str:
        rel = self.video_file_tmpl.format(video_id=entry['video_id'], label_name=entry['label_name'],
                                          rel_stem=entry['rel_stem'])
        return osp.join(self.data_prefix.get('video', ''), rel)

    def count_frames(self, path: str) -> int:
        return video_file_num_frames(path, self.fps) if osp.isfile(path) else 0
