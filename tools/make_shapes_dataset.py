#!/usr/bin/env python
"""Generate the shapes detection dataset (COCO format) used by the demo configs.

    python tools/make_shapes_dataset.py --root data/shapes --num-train 64 --num-val 16

Nothing is rewritten when ``root`` already holds a dataset generated with the same arguments
(``--force`` regenerates anyway). The demo configs also generate it on first use.
"""
import argparse
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from kdtoolbox.datasets.shapes import make_shapes_dataset, shapes_dataset_is_current  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default='data/shapes', help='output folder (default: data/shapes)')
    p.add_argument('--num-train', type=int, default=64, help='training images (default: 64)')
    p.add_argument('--num-val', type=int, default=16, help='validation images (default: 16)')
    p.add_argument('--img-size', type=int, default=256, help='image side in pixels (default: 256)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    p.add_argument('--max-shapes', type=int, default=4, help='at most this many shapes per image (default: 4)')
    p.add_argument('--force', action='store_true', help='regenerate even if the dataset is current')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    gen_args = dict(num_train=args.num_train, num_val=args.num_val, img_size=args.img_size,
                    seed=args.seed, max_shapes=args.max_shapes)
    current = not args.force and shapes_dataset_is_current(args.root, **gen_args)
    start = time.time()
    paths = make_shapes_dataset(args.root, force=args.force, **gen_args)
    if current:
        print(f'{paths["root"]} is already current ({gen_args}); nothing written')
    else:
        print(f'wrote the shapes dataset ({gen_args}) in {time.time() - start:.1f}s:')
    for split in ('train', 'val'):
        with open(paths[f'{split}_ann']) as f:
            coco = json.load(f)
        print(f'  {split}: {len(coco["images"])} images in {paths[f"{split}_img_dir"]}, '
              f'{len(coco["annotations"])} boxes in {paths[f"{split}_ann"]}')
    print(f'  marker: {paths["marker"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
