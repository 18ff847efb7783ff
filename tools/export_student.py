"""Write the student of a distillation checkpoint as a plain mmdet/mmdet3d checkpoint.

    python tools/export_student.py CONFIG CHECKPOINT OUT.pth

writes OUT.pth (state_dict of the student only) and OUT.py (the student's standalone config);
mmdet's own tools load them unchanged.
"""
import argparse

from kdtoolbox.engine.export import export_student


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='the distillation config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='the DistillationModel checkpoint')
    parser.add_argument('out', help='the student checkpoint to write')
    args = parser.parse_args()
    for what, path in export_student(args.checkpoint, args.out, args.config).items():
        print(f'wrote {what}: {path}')


if __name__ == '__main__':
    main()
