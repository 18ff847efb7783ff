"""Draws docs/training_step.svg, the picture of one training step in docs/architecture.md.

    .venv/bin/python docs/draw_training_step.py
"""
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = {  # name: (x, y, w, h, text, colour)
    'batch': (0.2, 4.1, 2.2, 0.9, 'raw batch\n(dataloader)', '#eeeeee'),
    'pre': (3.0, 4.1, 2.6, 0.9, "student's data\npreprocessor", '#eeeeee'),
    'teacher': (6.4, 5.4, 3.4, 1.2, 'teacher (frozen, eval, no_grad)\nTeacherRunner: Recorder,\nstops after last recorded module', '#dbe9f6'),
    'student': (6.4, 2.5, 3.4, 1.2, "student.loss()\nwith its Recorder\n(task losses unchanged)", '#fde2cf'),
    'distiller': (10.8, 4.0, 3.0, 1.1, 'distiller(student records,\nteacher records, context)\nfp32, adapters inside', '#e2f0d9'),
    'merge': (14.6, 3.0, 3.0, 1.3, 'loss_*  +  distill.<name>.loss_*\n  x distill_loss_scale\n(DistillLossScheduleHook)', '#eeeeee'),
    'update': (14.6, 0.9, 3.0, 1.0, 'non-finite guard,\nbackward, optimizer step', '#eeeeee'),
}
ARROWS = [  # (from, side, to, side, label)
    ('batch', 'right', 'pre', 'left', ''), ('pre', 'right', 'teacher', 'left', 'inputs, data_samples'),
    ('pre', 'right', 'student', 'left', ''), ('teacher', 'right', 'distiller', 'top', 'teacher records'),
    ('student', 'right', 'distiller', 'bottom', 'student records'), ('student', 'right', 'merge', 'left', 'task losses'),
    ('distiller', 'right', 'merge', 'top', 'distill losses'), ('merge', 'bottom', 'update', 'top', '')]


def anchor(name, side):
    """The middle of one side of a box."""
    x, y, w, h = BOXES[name][:4]
    return {'left': (x, y + h / 2), 'right': (x + w, y + h / 2), 'top': (x + w / 2, y + h),
            'bottom': (x + w / 2, y)}[side]


def main(out=osp.join(osp.dirname(osp.abspath(__file__)), 'training_step.svg')):
    fig, ax = plt.subplots(figsize=(12, 5))
    for name, (x, y, w, h, text, colour) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.05', fc=colour, ec='#444444'))
        ax.text(x + w / 2, y + h / 2, text, ha='center', va='center', fontsize=8.5)
    for a, side_a, b, side_b, label in ARROWS:
        (x0, y0), (x1, y1) = anchor(a, side_a), anchor(b, side_b)
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle='-|>', mutation_scale=12, color='#555555',
                                     shrinkA=3, shrinkB=3))
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, label, ha='center', fontsize=7.5, color='#333333')
    ax.text(0.2, 0.3, 'DistillationModel.train_step: one preprocess, the teacher only as far as needed, '
            "the student's own loss(), the distiller's losses; checkpoints hold student + distiller",
            fontsize=8, color='#333333')
    ax.set_xlim(0, 18)
    ax.set_ylim(0, 7)
    ax.axis('off')
    fig.tight_layout()
    fig.savefig(out, format='svg')
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
