"""What distillation costs: median times and peak memory of the student's training step, the lower
bound (student step + teacher forward up to its recorded modules) and the full distillation step,
with the ratios 3/2 and 3/1 and the split of the distillation step (see kdtoolbox/engine/benchmark.py).

    python tools/benchmark.py CONFIG [--device cpu|cuda] [--threads N] [--warmup 2] [--repeats 5]
        [--random-teacher] [--data-from CONFIG] [--batch-size N] [--amp] [--cfg-options k=v ...]

The model is built from the config with random weights (no init_weights(): nothing is downloaded;
the costs do not depend on the values); ``--random-teacher`` also skips the teacher checkpoint.
``--data-from`` takes the training data loader of another config (e.g. the shapes data for a COCO
config). One batch of the training loader is used for every step: data loading is not timed.
"""
from kdtoolbox.engine.benchmark import main

if __name__ == '__main__':
    main()
