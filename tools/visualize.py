"""Draw what a distiller looks at (masks, attention) for one image, as PNGs.

    python tools/visualize.py CONFIG IMAGE --out DIR [--ann COCO_JSON] [--teacher-checkpoint CKPT]
                              [--checkpoint CKPT] [--cfg-options k=v ...]
    python tools/visualize.py CONFIG --index N --out DIR ...   (an item of the train data set)

Writes NAME.png (the map over the resized image, or a heatmap for BEV maps), NAME.map.png (grey
levels), index.json and index.html into DIR; see kdtoolbox/visualize.py. Same as
`kdtoolbox visualize`.
"""
import sys

from kdtoolbox.cli import main

if __name__ == '__main__':
    sys.exit(main(['visualize', *sys.argv[1:]]))
