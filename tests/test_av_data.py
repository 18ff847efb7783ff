"""The av plugin's data: generated dataset, annotation formats, datasets (frame folders and mp4
files), the official temporal sampling / window protocol, spatial transforms and the preprocessor."""
import csv
import json
import os
import os.path as osp
import random
import wave

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from kdtoolbox_plugins.av import generate as gen
from kdtoolbox_plugins.av.data import AVDataPreprocessor
from kdtoolbox_plugins.av.datasets import AVFrameFolderDataset, AVVideoFileDataset, parse_annotations
from kdtoolbox_plugins.av.structures import AVDataSample
from kdtoolbox_plugins.av import transforms as T

SMALL = dict(num_classes=3, num_train=6, num_val=3, num_frames=12, fps=4, frame_size=24,
             sample_rate=8000, noise_ratio=0.5, noisy_fraction=0.5, embed_dim=16, embed_noise=0.1,
             num_mp4=2, seed=3)


@pytest.fixture(autouse=True)
def _kd_scope():
    import kdtoolbox
    kdtoolbox.load_plugins()
    with DefaultScope.overwrite_default_scope('kdtoolbox'):
        yield


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return gen.make_av_dataset(str(tmp_path_factory.mktemp('av') / 'data'), **SMALL)


def _read_wav_independently(path):
    with wave.open(path, 'rb') as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), '<i2').astype(np.float32) / 32768, w.getframerate()


TEST_PIPE = [dict(type='AVSampleClip'), dict(type='AVLoadFrames'), dict(type='AVLoadAudio', sample_rate=8000),
             dict(type='AVLoadTeacherEmbedding'), dict(type='AVResize', size=24), dict(type='AVCenterCrop', size=24),
             dict(type='PackAVInputs')]
PREFIX = dict(video='frames', audio='audio', teacher='audio_features')


# --------------------------------------------------------------------------- generated data
def test_generated_layout_and_annotation(root):
    with open(osp.join(root, 'annotation.json')) as f:
        ann = json.load(f)
    assert ann['labels'] == ['beat', 'chirp', 'hum']
    db = ann['database']
    assert sum(v['subset'] == 'training' for v in db.values()) == 6
    assert sum(v['subset'] == 'validation' for v in db.values()) == 3
    for vid, info in db.items():
        assert len(os.listdir(osp.join(root, 'frames', vid))) == 12
        assert np.load(osp.join(root, 'audio_features', f'{vid}.npy')).shape == (16,)
        audio, rate = _read_wav_independently(osp.join(root, 'audio', f'{vid}.wav'))
        assert rate == 8000 and audio.shape == (12 * 8000 // 4,)
        img = cv2.imread(osp.join(root, 'frames', vid, 'image_00001.jpg'))
        assert img.shape == (24, 24, 3)
    # balanced labels: video i has class i % 3
    assert db['v_hum_train_0005']['label'] == 'hum'
    assert len(os.listdir(osp.join(root, 'videos'))) == 4  # 2 per split


def test_generation_is_deterministic_and_cached(root, tmp_path):
    other = gen.make_av_dataset(str(tmp_path / 'again'), **SMALL)
    for sub in ('audio', 'audio_features'):
        for name in sorted(os.listdir(osp.join(root, sub))):
            with open(osp.join(root, sub, name), 'rb') as a, open(osp.join(other, sub, name), 'rb') as b:
                assert a.read() == b.read(), name
    with open(osp.join(root, 'annotation.json')) as a, open(osp.join(other, 'annotation.json')) as b:
        assert a.read() == b.read()
    stamp = os.stat(osp.join(other, 'VERSION')).st_mtime_ns
    gen.make_av_dataset(other, **SMALL)  # current: nothing rewritten
    assert os.stat(osp.join(other, 'VERSION')).st_mtime_ns == stamp
    assert gen.av_dataset_is_current(other, **SMALL)
    assert not gen.av_dataset_is_current(other, **dict(SMALL, seed=4))


def test_generation_refuses_foreign_folder_and_bad_args(tmp_path):
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'keep.txt').write_text('x')
    with pytest.raises(FileExistsError, match='not a generated audio-visual dataset'):
        gen.make_av_dataset(str(foreign), **SMALL)
    assert (foreign / 'keep.txt').exists()
    with pytest.raises(ValueError, match='noise_ratio'):
        gen.make_av_dataset(str(tmp_path / 'x'), **dict(SMALL, noise_ratio=1.5))
    with pytest.raises(TypeError, match='unknown arguments'):
        gen.make_av_dataset(str(tmp_path / 'x'), bogus=1)


def _band_energy(audio, rate, freq):
    spec = np.abs(np.fft.rfft(audio)) ** 2  # power
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    sel = (freqs > freq * 0.97) & (freqs < freq * 1.03)
    return spec[sel].sum() / spec.sum()


def test_noise_mixes_the_sound_of_another_class(root):
    """Independent check of the mixing: energy near the other class's fundamental 200 * 1.5^k Hz."""
    with open(osp.join(root, 'annotation.json')) as f:
        db = json.load(f)['database']
    names = ['beat', 'chirp', 'hum']
    noisy = [v for v, i in db.items() if i['is_noisy']]
    clean = [v for v, i in db.items() if not i['is_noisy']]
    assert noisy and clean  # noisy_fraction 0.5 over 9 videos
    for vid in noisy + clean:
        audio, rate = _read_wav_independently(osp.join(root, 'audio', f'{vid}.wav'))
        own = names.index(db[vid]['label'])
        assert _band_energy(audio, rate, 200 * 1.5 ** own) > 0.1, vid
        if vid in noisy:
            other = names.index(db[vid]['irrelevant_label'])
            assert other != own
            assert _band_energy(audio, rate, 200 * 1.5 ** other) > 0.1, vid
        else:
            for k in set(range(3)) - {own}:
                assert _band_energy(audio, rate, 200 * 1.5 ** k) < 0.02, vid


def test_teacher_embedding_is_projected_log_spectrum_plus_noise(tmp_path):
    args = dict(SMALL, embed_noise=0.0, num_mp4=0)
    r = gen.make_av_dataset(str(tmp_path / 'clean'), **args)
    proj = gen.teacher_projection(args['seed'], args['embed_dim'])
    for vid in os.listdir(osp.join(r, 'frames')):
        audio, rate = _read_wav_independently(osp.join(r, 'audio', f'{vid}.wav'))
        # independent band energies: 64 geometric bands 50 Hz .. rate/2, log1p, standardised
        mag = np.abs(np.fft.rfft(audio.astype(np.float64) * 32768 / 32767))
        freqs = np.fft.rfftfreq(len(audio), 1 / rate)
        edges = np.exp(np.linspace(np.log(50), np.log(rate / 2), 65))
        bands = np.array([mag[(freqs >= a) & (freqs < b)].mean() if ((freqs >= a) & (freqs < b)).any() else 0
                          for a, b in zip(edges[:-1], edges[1:])])
        lb = np.log1p(bands)
        expected = proj @ ((lb - lb.mean()) / (lb.std() + 1e-8))
        np.testing.assert_allclose(np.load(osp.join(r, 'audio_features', f'{vid}.npy')), expected,
                                   rtol=1e-4, atol=1e-4)
    # with noise: the residual has the configured std
    noisy = gen.make_av_dataset(str(tmp_path / 'noisy'), **dict(args, embed_noise=0.5, num_train=30))
    res = []
    for vid in os.listdir(osp.join(noisy, 'frames')):
        clean = np.load(osp.join(r, 'audio_features', f'{vid}.npy')) if osp.exists(
            osp.join(r, 'audio_features', f'{vid}.npy')) else None
        if clean is not None:
            res.append(np.load(osp.join(noisy, 'audio_features', f'{vid}.npy')) - clean)
    assert 0.35 < np.concatenate(res).std() < 0.65


def test_clean_teacher_embeddings_separate_classes(tmp_path):
    """A noise-free teacher is informative: nearest class centroid (from train) classifies val."""
    r = gen.make_av_dataset(str(tmp_path / 'c'), **dict(SMALL, noise_ratio=0.0, num_train=12, num_val=6, num_mp4=0))
    with open(osp.join(r, 'annotation.json')) as f:
        db = json.load(f)['database']
    names = ['beat', 'chirp', 'hum']
    emb = {v: np.load(osp.join(r, 'audio_features', f'{v}.npy')) for v in db}
    cent = np.stack([np.mean([emb[v] for v, i in db.items() if i['subset'] == 'training'
                              and i['label'] == n], 0) for n in names])
    for v, i in db.items():
        if i['subset'] == 'validation':
            assert names[np.argmin(((cent - emb[v]) ** 2).sum(1))] == i['label']


# --------------------------------------------------------------------------- temporal protocol
def test_loop_pad_and_sliding_windows_official_semantics():
    assert T.loop_pad([16, 17, 18, 19], 8) == [16, 17, 18, 19, 16, 17, 18, 19]
    assert T.loop_pad([5], 3) == [5, 5, 5]
    w = T.sliding_windows(range(40), 16)
    assert w == [list(range(16)), list(range(16, 32)), list(range(32, 40)) * 2]
    assert T.sliding_windows(range(32), 16) == [list(range(16)), list(range(16, 32))]
    assert T.sliding_windows(range(16), 16) == [list(range(16))]
    assert T.sliding_windows(range(5), 16) == [[0, 1, 2, 3, 4] * 3 + [0]]
    # stride 8: overlapping windows, the first padded one ends the list
    assert T.sliding_windows(range(20), 8, 8) == [list(range(8)), list(range(8, 16)), [16, 17, 18, 19] * 2]
    with pytest.raises(ValueError, match='empty'):
        T.sliding_windows([], 16)


def test_even_windows_official_semantics():
    # n=40, size 16, 3 samples: stride ceil((40-1-16)/2) = 12 -> begins 0, 12, 24
    assert T.even_windows(range(40), 16, 3) == [list(range(0, 16)), list(range(12, 28)), list(range(24, 40))]
    # n=20: stride max(1, ceil(3/2)) = 2 -> 0, 2, 4 (all full)
    assert T.even_windows(range(20), 16, 3) == [list(range(0, 16)), list(range(2, 18)), list(range(4, 20))]
    # short video: one padded window and stop
    assert T.even_windows(range(10), 16, 3) == [list(range(10)) + list(range(6))]


def test_random_crop_keeps_the_official_start_range():
    rng = random.Random(0)
    starts = {T.random_crop(range(20), 16, rng)[0] for _ in range(300)}
    assert starts == {0, 1, 2, 3}  # randint(0, 20 - 16 - 1): start 4 is never drawn (official quirk)
    assert {T.random_crop(range(17), 16, rng)[0] for _ in range(50)} == {0}
    assert T.random_crop(range(5), 8, rng) == [0, 1, 2, 3, 4, 0, 1, 2]
    assert T.center_crop(range(40), 16) == list(range(12, 28))
    assert T.subsample(range(10), 3) == [0, 3, 6, 9]


# --------------------------------------------------------------------------- spatial transforms
def _clip(t=4, h=30, w=40):
    rng = np.random.RandomState(0)
    base = rng.randint(0, 255, (h, w, 3)).astype(np.uint8)
    return np.stack([base] * t)


def test_random_resized_crop_is_one_crop_per_clip():
    np.random.seed(1)
    t = T.AVRandomResizedCrop(size=16, scale=(0.25, 1.0))
    for _ in range(20):
        out = t.transform({'imgs': _clip()})
        assert out['imgs'].shape == (4, 16, 16, 3)
        assert all(np.array_equal(out['imgs'][0], f) for f in out['imgs'])  # same crop on every frame
        x0, y0, x1, y1 = out['crop_box']
        area = (x1 - x0) * (y1 - y0) / (30 * 40)
        assert 0.2 <= area <= 1.0 and 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 30
        ratio = (x1 - x0) / (y1 - y0)
        assert 3 / 4 - 0.1 <= ratio <= 4 / 3 + 0.1
        # the crop content, resized: equals cv2 on the cropped region
        expected = cv2.resize(_clip()[0, y0:y1, x0:x1], (16, 16), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(out['imgs'][0], expected)


def test_flip_resize_center_crop():
    clip = _clip()
    out = T.AVFlip(prob=1.0).transform({'imgs': clip.copy()})
    assert np.array_equal(out['imgs'][:, :, 0], clip[:, :, -1]) and out['flip']
    assert np.array_equal(T.AVFlip(prob=0.0).transform({'imgs': clip.copy()})['imgs'], clip)
    out = T.AVResize(size=15).transform({'imgs': clip})
    assert out['imgs'].shape == (4, 15, 20, 3)  # shorter side (H=30) -> 15, aspect kept
    out = T.AVCenterCrop(size=20).transform({'imgs': clip})
    assert np.array_equal(out['imgs'], clip[:, 5:25, 10:30])
    with pytest.raises(ValueError, match='smaller than the crop'):
        T.AVCenterCrop(size=50).transform({'imgs': clip, 'video_id': 'v'})


def test_pack_requires_label_and_sets_defaults():
    with pytest.raises(KeyError, match='gt_label'):
        T.PackAVInputs().transform({'imgs': _clip(), 'video_id': 'v1'})
    out = T.PackAVInputs().transform({'imgs': _clip(), 'video_id': 'v1', 'gt_label': 2})
    assert out['inputs']['video'].shape == (3, 4, 30, 40) and out['inputs']['video'].dtype == torch.uint8
    assert torch.equal(out['inputs']['video'][:, 1], torch.from_numpy(_clip()[1]).permute(2, 0, 1))
    s = out['data_samples']
    assert isinstance(s, AVDataSample) and s.gt_label.tolist() == [2]
    assert s.metainfo['window_index'] == 0 and s.metainfo['num_windows'] == 1
    with pytest.raises(ValueError, match='one class index'):
        AVDataSample().gt_label = [1, 2]
    with pytest.raises(ValueError, match='vector'):
        AVDataSample().teacher_embedding = torch.zeros(2, 3)


# --------------------------------------------------------------------------- datasets
def test_frame_folder_dataset_reads_the_files(root):
    ds = AVFrameFolderDataset(data_root=root, ann_file='annotation.json', data_prefix=PREFIX, clip_len=8, fps=4,
                              test_mode=True, pipeline=TEST_PIPE)
    assert ds.metainfo['classes'] == ('beat', 'chirp', 'hum')
    # 12 frames, windows of 8 with stride 8: [0..7], [8..11 looped]: 2 windows per video
    assert len(ds) == 6 and ds.num_videos == 3
    item = ds[1]
    s = item['data_samples']
    assert s.metainfo['video_id'] == 'v_beat_val_0000'
    assert (s.metainfo['window_index'], s.metainfo['num_windows']) == (1, 2)
    assert s.metainfo['frame_inds'] == [8, 9, 10, 11, 8, 9, 10, 11]
    assert s.gt_label.tolist() == [0]
    video = item['inputs']['video']
    assert video.shape == (3, 8, 24, 24) and video.dtype == torch.uint8
    for t, pos in enumerate(s.metainfo['frame_inds']):
        bgr = cv2.imread(osp.join(root, 'frames', 'v_beat_val_0000', f'image_{pos + 1:05d}.jpg'))
        assert torch.equal(video[:, t], torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1))
    # audio: the clip's 2 s from 8 / 4 fps = 2 s, 16000 samples at 8 kHz, zero padded past the end (3 s)
    wav, _ = _read_wav_independently(osp.join(root, 'audio', 'v_beat_val_0000.wav'))
    audio = item['inputs']['audio']
    assert audio.dtype == torch.float32 and audio.shape == (16000,)
    np.testing.assert_allclose(audio[:8000].numpy(), wav[16000:24000], atol=1e-6)
    assert torch.all(audio[8000:] == 0)
    np.testing.assert_array_equal(s.teacher_embedding.numpy(),
                                  np.load(osp.join(root, 'audio_features', 'v_beat_val_0000.npy')))


def test_frame_folder_training_items_and_batch(root):
    pipe = [dict(type='AVSampleClip'), dict(type='AVLoadFrames'), dict(type='AVLoadAudio', sample_rate=8000),
            dict(type='AVRandomResizedCrop', size=16), dict(type='AVFlip'), dict(type='PackAVInputs')]
    ds = AVFrameFolderDataset(data_root=root, data_prefix=dict(video='frames', audio='audio'), clip_len=8, fps=4,
                              pipeline=pipe)
    assert len(ds) == 6  # one item per training video
    items = [ds[i] for i in range(4)]
    for it in items:
        inds = it['data_samples'].metainfo['frame_inds']
        assert len(inds) == 8 and inds[0] in (0, 1, 2, 3) and inds == list(range(inds[0], inds[0] + 8))
        assert 'teacher_embedding' not in it['data_samples'].keys()
    batch = AVDataPreprocessor()(pseudo_collate(items))
    assert batch['inputs']['video'].shape == (4, 3, 8, 16, 16)
    assert batch['inputs']['audio'].shape == (4, 16000)
    assert len(batch['data_samples']) == 4


def test_even_and_center_test_windows(root):
    ds = AVFrameFolderDataset(data_root=root, clip_len=4, fps=4, test_mode=True,
                              test_windows=dict(type='even', num=3), pipeline=[])
    # 12 frames, size 4, 3 samples: stride ceil((12-1-4)/2) = 4 -> 0-3, 4-7, 8-11
    infos = [ds.get_data_info(i) for i in range(3)]
    assert [i['frame_inds'] for i in infos] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert len(ds) == 9
    ds = AVFrameFolderDataset(data_root=root, clip_len=4, fps=4, test_mode=True, frame_interval=2,
                              test_windows=dict(type='center'), pipeline=[])
    assert ds.get_data_info(0)['frame_inds'] == [2, 4, 6, 8]  # positions 0,2,..,10: centre 4 of 6
    with pytest.raises(ValueError, match='test_windows.type'):
        AVFrameFolderDataset(data_root=root, test_mode=True, test_windows=dict(type='dense'))


def test_video_file_dataset_decodes_mp4(root):
    with pytest.warns(UserWarning, match='skipped 1 videos'):  # the third val video has no mp4
        ds = AVVideoFileDataset(data_root=root, ann_file='annotation.json', clip_len=8, fps=4, test_mode=True,
                                on_missing='skip', pipeline=TEST_PIPE[:2] + TEST_PIPE[4:])
    ids = sorted({ds.get_data_info(i)['video_id'] for i in range(len(ds))})
    assert ids == ['v_beat_val_0000', 'v_chirp_val_0001']  # the two val videos with an mp4
    assert ds.get_data_info(0)['num_frames'] == 12  # 3 s at 4 fps
    item = ds[0]
    video = item['inputs']['video'].numpy().astype(np.float32)
    assert video.shape == (3, 8, 24, 24)
    vid = item['data_samples'].metainfo['video_id']
    jpgs = [cv2.imread(osp.join(root, 'frames', vid, f'image_{k + 1:05d}.jpg'))[..., ::-1].transpose(2, 0, 1)
            for k in range(12)]
    for t in range(8):  # decoded frame t matches JPEG frame t better than its neighbours (lossy codec)
        errs = [np.abs(video[:, t] - j.astype(np.float32)).mean() for j in jpgs]
        assert int(np.argmin(errs)) == t and errs[t] < 15, (t, errs)


def test_missing_files_error_or_skip(root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'v_beat_train_0000\.avi'):
        AVVideoFileDataset(data_root=root, ann_file='annotation.json', video_file_tmpl='{video_id}.avi', fps=4)
    with pytest.raises(FileNotFoundError, match='annotation file not found'):
        AVFrameFolderDataset(data_root=root, ann_file='nope.json')
    with pytest.warns(UserWarning, match='skipped 4 videos'):
        ds = AVVideoFileDataset(data_root=root, ann_file='annotation.json', fps=4, on_missing='skip')
    assert len(ds) == 2
    with pytest.raises(KeyError, match='data_prefix'):
        AVFrameFolderDataset(data_root=root, data_prefix=dict(frames='frames'))


def test_generate_on_first_use(tmp_path):
    ds = AVFrameFolderDataset(data_root=str(tmp_path / 'g'), ann_file='annotation.json', clip_len=8, fps=4,
                              generate=dict(SMALL, num_mp4=0), pipeline=[])
    assert len(ds) == 6 and gen.av_dataset_is_current(str(tmp_path / 'g'), **dict(SMALL, num_mp4=0))


# --------------------------------------------------------------------------- annotation formats
def test_official_json_subsets(root):
    classes, entries = parse_annotations(osp.join(root, 'annotation.json'), subset='validation')
    assert classes == ['beat', 'chirp', 'hum']
    assert [(e['video_id'], e['label']) for e in entries] == [
        ('v_beat_val_0000', 0), ('v_chirp_val_0001', 1), ('v_hum_val_0002', 2)]
    classes, entries = parse_annotations(osp.join(root, 'annotation.json'), subset='training', classes=['hum', 'beat'])
    assert classes == ['hum', 'beat'] and [e['label'] for e in entries] == [1, 0, 1, 0]


def test_kinetics_csv(tmp_path):
    path = tmp_path / 'k.csv'
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split'])
        w.writerow(['playing drums', 'abc', 10, 20, 'train'])
        w.writerow(['reading book', 'def', 0, 10, 'train'])   # not a Kinetics-Sound class
        w.writerow(['playing bagpipes', 'ghi', 5, 15, 'train'])
        w.writerow(['playing drums', 'jkl', 1, 11, 'val'])
    classes, entries = parse_annotations(str(path), subset='train', classes=['playing bagpipes', 'playing drums'])
    assert classes == ['playing bagpipes', 'playing drums']
    assert [(e['video_id'], e['label']) for e in entries] == [('abc_000010_000020', 1), ('ghi_000005_000015', 0)]
    classes, entries = parse_annotations(str(path))  # no subset, no class filter
    assert classes == ['playing bagpipes', 'playing drums', 'reading book'] and len(entries) == 4
    bad = tmp_path / 'bad.csv'
    bad.write_text('name,id\nx,y\n')
    with pytest.raises(ValueError, match='bad.csv: the CSV header'):
        parse_annotations(str(bad))


def test_ucf_lists(root, tmp_path):
    ci = osp.join(root, 'annotations', 'classInd.txt')
    classes, train = parse_annotations(osp.join(root, 'annotations', 'trainlist01.txt'), class_index_file=ci)
    assert classes == ['beat', 'chirp', 'hum'] and len(train) == 6
    assert train[1] == dict(video_id='v_chirp_train_0001', label=1, label_name='chirp',
                            rel_stem='chirp/v_chirp_train_0001')
    _, test = parse_annotations(osp.join(root, 'annotations', 'testlist01.txt'), class_index_file=ci)
    assert [e['label'] for e in test] == [0, 1, 2]
    bad = tmp_path / 'list.txt'
    bad.write_text('beat/v_x.avi 7\n')
    with pytest.raises(ValueError, match=r'list.txt: line 1: label .7.'):
        parse_annotations(str(bad), class_index_file=ci)
    with pytest.raises(ValueError, match='needs class_index_file'):
        parse_annotations(str(bad))


def test_json_errors(tmp_path):
    p = tmp_path / 'a.json'
    p.write_text(json.dumps({'labels': ['a'], 'database': {'v1': {'subset': 'training', 'label': 'b'}}}))
    with pytest.raises(ValueError, match=r"database\['v1'\]\['label'\] = 'b' is not in 'labels'"):
        parse_annotations(str(p), subset='training')
    p.write_text(json.dumps({'database': {}}))
    with pytest.raises(ValueError, match="missing the key 'labels'"):
        parse_annotations(str(p))
    with pytest.raises(ValueError, match='cannot tell the annotation format'):
        parse_annotations(str(tmp_path / 'a.yaml'))


# --------------------------------------------------------------------------- preprocessor
def test_preprocessor_normalises_by_hand():
    pre = AVDataPreprocessor(mean=[10., 20., 30.], std=[2., 4., 5.])
    v = torch.randint(0, 256, (3, 2, 4, 4), dtype=torch.uint8)
    w = torch.randint(0, 256, (3, 2, 4, 4), dtype=torch.uint8)
    a = torch.randn(100)
    data = {'inputs': [{'video': v, 'audio': a}, {'video': w, 'audio': a * 2}],
            'data_samples': [AVDataSample(), AVDataSample()]}
    out = pre(data)
    x = out['inputs']['video']
    assert x.shape == (2, 3, 2, 4, 4) and x.dtype == torch.float32
    assert torch.allclose(x[1, 2], (w[2].float() - 30) / 5)
    assert torch.allclose(x[0, 0], (v[0].float() - 10) / 2)
    assert torch.equal(out['inputs']['audio'], torch.stack([a, a * 2]))
    assert len(out['data_samples']) == 2
    item = {'inputs': {'video': v}, 'data_samples': AVDataSample()}
    raw = AVDataPreprocessor(mean=None, std=None)(pseudo_collate([item]))
    assert torch.equal(raw['inputs']['video'][0], v.float()) and 'audio' not in raw['inputs']
    with pytest.raises(ValueError, match=r"differ in inputs\['video'\] shape"):
        pre({'inputs': {'video': [v, v[:, :1]]}})
    with pytest.raises(KeyError, match='unknown input keys'):
        pre({'inputs': {'image': [v]}})
    with pytest.raises(ValueError, match='both mean and std'):
        AVDataPreprocessor(mean=[1, 2, 3], std=None)


def test_components_are_registered():
    from kdtoolbox.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS
    assert DATASETS.get('AVFrameFolderDataset') is AVFrameFolderDataset
    assert DATASETS.get('AVVideoFileDataset') is AVVideoFileDataset
    assert MODELS.get('AVDataPreprocessor') is AVDataPreprocessor
    for name in ('AVSampleClip', 'AVLoadFrames', 'AVLoadAudio', 'AVLoadTeacherEmbedding', 'AVRandomResizedCrop',
                 'AVFlip', 'AVResize', 'AVCenterCrop', 'PackAVInputs'):
        assert TRANSFORMS.get(name) is getattr(T, name)
    assert HOOKS.get('GalleryFeatureHook') is not None
    assert METRICS.get('VideoAccuracy') is not None and METRICS.get('RetrievalMetric') is not None


def test_make_av_dataset_tool(tmp_path):
    import subprocess
    import sys
    tool = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'make_av_dataset.py')
    out = subprocess.run([sys.executable, tool, '--root', str(tmp_path / 't'), '--num-train', '3', '--num-val', '2',
                          '--num-classes', '2', '--num-frames', '8', '--frame-size', '16', '--num-mp4', '0'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'training: 3 videos' in out.stdout and 'validation: 2 videos' in out.stdout
    assert gen.av_dataset_is_current(str(tmp_path / 't'), num_train=3, num_val=2, num_classes=2, num_frames=8,
                                     frame_size=16, num_mp4=0)


def test_visual_pairs_share_appearance_and_differ_by_speed():
    """Classes 0/1 (and 2/3) have the same mean colour; the odd one drifts 3x faster (bigger
    frame-to-frame changes); class 2 has another colour. Independent of the renderer's formulas."""
    def stats(label, seed):
        f = gen.render_frames(label, 4, 16, 32, np.random.RandomState(seed), visual_pairs=True,
                              visual_noise=0.0).astype(np.float64)
        return f.mean(axis=(0, 1, 2)), np.abs(np.diff(f, axis=0)).mean()
    c0, d0 = stats(0, 1)
    c1, d1 = stats(1, 2)
    c2, _ = stats(2, 3)
    assert np.abs(c0 - c1).max() < 6 < np.abs(c0 - c2).max()
    assert d1 > 1.8 * d0
    distinct0, _ = stats(0, 1)
    f_alone = gen.render_frames(1, 4, 16, 32, np.random.RandomState(2), visual_pairs=False, visual_noise=0.0)
    assert np.abs(f_alone.astype(np.float64).mean(axis=(0, 1, 2)) - distinct0).max() > 6
