#!/usr/bin/env python
"""Generate the small audio-visual dataset of the av demo configs (frames, wavs, teacher embeddings,
mp4s, annotation files in the official / Kinetics / UCF101 styles; see plugins/av/generate.py).

    python tools/make_av_dataset.py --root data/av_demo --noise-ratio 0.5 --noisy-fraction 0.5

Nothing is rewritten when ``root`` already holds a dataset generated with the same arguments
(``--force`` regenerates anyway). The demo configs also generate it on first use; give them the
same arguments (``generate=dict(...)`` in configs/av/demo/_base_/av_demo_data.py).
"""
import argparse
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from kdtoolbox_plugins.av.generate import _DEFAULTS, av_dataset_is_current, make_av_dataset  # noqa: E402

HELP = {
    'num_classes': 'classes', 'num_train': 'training videos', 'num_val': 'validation videos',
    'num_frames': 'frames per video', 'fps': 'frame rate of the dumps (and of the mp4s)',
    'frame_size': 'frame side in pixels', 'sample_rate': 'audio sample rate (Hz)',
    'noise_ratio': 'mixing weight of the irrelevant sound in a noisy track',
    'noisy_fraction': 'fraction of the videos whose audio is mixed with another class',
    'embed_dim': 'teacher embedding size', 'embed_noise': 'std of the Gaussian noise on the embeddings',
    'visual_pairs': '1: classes 2j and 2j+1 look alike and differ by drift speed only; 0: all distinct',
    'visual_noise': 'std of the Gaussian pixel noise',
    'visual_contrast': 'amplitude of the class grating in grey levels (lower: a weaker class signal)',
    'num_mp4': 'mp4 files for the first videos of each split (needs PyAV)', 'seed': 'random seed'}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default='data/av_demo', help='output folder (default: data/av_demo)')
    for key, default in _DEFAULTS.items():
        p.add_argument('--' + key.replace('_', '-'), type=type(default), default=default,
                       help=f'{HELP[key]} (default: {default})')
    p.add_argument('--force', action='store_true', help='regenerate even if the dataset is current')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    gen_args = {k: getattr(args, k) for k in _DEFAULTS}
    current = not args.force and av_dataset_is_current(args.root, **gen_args)
    start = time.time()
    root = make_av_dataset(args.root, force=args.force, **gen_args)
    if current:
        print(f'{root} is already current ({gen_args}); nothing written')
    else:
        print(f'wrote the audio-visual dataset ({gen_args}) in {time.time() - start:.1f}s to {root}:')
    with open(osp.join(root, 'annotation.json')) as f:
        db = json.load(f)['database']
    for subset in ('training', 'validation'):
        vids = [v for v in db.values() if v['subset'] == subset]
        print(f'  {subset}: {len(vids)} videos, {sum(v["is_noisy"] for v in vids)} with noisy audio')
    print(f'  annotation: {osp.join(root, "annotation.json")}; frames/, audio/, audio_features/, videos/, annotations/')
    return 0


if __name__ == '__main__':
    sys.exit(main())
