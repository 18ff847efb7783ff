"""Draw what a distiller looks at (masks, attention, BEV masks and keypoints) for one input, as PNGs.

    python tools/visualize.py CONFIG IMAGE --out DIR [--ann COCO_JSON] [--teacher-checkpoint CKPT]
                              [--checkpoint CKPT] [--cfg-options k=v ...]
    python tools/visualize.py CONFIG --index N [--split train|val|test] [--seed S] --out DIR ...
                              (item N of a data set, e.g. a point cloud or a point cloud + camera
                              images, with its GT boxes; train: its pipeline with seeded augmentation)

Writes NAME.png (the map over the resized image, or a heatmap for BEV maps, scaled by an integer
factor to at least 256 pixels, with keypoints as white dots), NAME.map.png (grey levels),
index.json and index.html into DIR; see kdtoolbox/visualize.py. Same as `kdtoolbox visualize`.
"""
import sys

from kdtoolbox.cli import main

if __name__ == '__main__':
    sys.exit(main(['visualize', *sys.argv[1:]]))
