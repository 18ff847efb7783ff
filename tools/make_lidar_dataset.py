#!/usr/bin/env python
"""Generate the LiDAR scene dataset (mmdet3d v2 infos + .bin points) used by configs/bev/demo/.

    python tools/make_lidar_dataset.py --root data/lidar_scenes --num-train 64 --num-val 16

Nothing is rewritten when ``root`` already holds a dataset generated with the same arguments
(``--force`` regenerates anyway). The demo configs also generate it on first use.
"""
import argparse
import os.path as osp
import pickle
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from kdtoolbox.datasets.lidar_scenes import (DEFAULT_RANGE, LIDAR_CLASSES, lidar_scenes_is_current,  # noqa: E402
                                             make_lidar_scenes)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default='data/lidar_scenes', help='output folder (default: data/lidar_scenes)')
    p.add_argument('--num-train', type=int, default=64, help='training scenes (default: 64)')
    p.add_argument('--num-val', type=int, default=16, help='validation scenes (default: 16)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    p.add_argument('--max-objects', type=int, default=8, help='at most this many objects per scene (default: 8)')
    p.add_argument('--point-cloud-range', type=float, nargs=6, default=list(DEFAULT_RANGE),
                   metavar=('X0', 'Y0', 'Z0', 'X1', 'Y1', 'Z1'), help=f'default: {list(DEFAULT_RANGE)}')
    p.add_argument('--force', action='store_true', help='regenerate even if the dataset is current')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    gen_args = dict(num_train=args.num_train, num_val=args.num_val, seed=args.seed, max_objects=args.max_objects,
                    point_cloud_range=tuple(args.point_cloud_range))
    current = not args.force and lidar_scenes_is_current(args.root, **gen_args)
    start = time.time()
    paths = make_lidar_scenes(args.root, force=args.force, **gen_args)
    if current:
        print(f'{paths["root"]} is already current ({gen_args}); nothing written')
    else:
        print(f'wrote the LiDAR scene dataset ({gen_args}) in {time.time() - start:.1f}s:')
    for split in ('train', 'val'):
        with open(paths[f'{split}_info'], 'rb') as f:
            infos = pickle.load(f)
        counts = [0] * len(LIDAR_CLASSES)
        for info in infos['data_list']:
            for inst in info['instances']:
                counts[inst['bbox_label_3d']] += 1
        per_class = ', '.join(f'{n} {c}' for c, n in zip(LIDAR_CLASSES, counts))
        print(f'  {split}: {len(infos["data_list"])} scenes ({per_class}) in {paths[f"{split}_info"]}')
    print(f'  points: {paths["points"]}; marker: {paths["marker"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
