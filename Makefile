# The two set-up commands (see README.md).
PY := .venv/bin/python

.PHONY: install test test-fast demo-data demo demo-quick demo-table demo-tables
install:
	bash tools/install.sh

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

demo-data:
	$(PY) tools/make_shapes_dataset.py --root data/shapes

demo:
	$(PY) tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
	$(PY) tools/train.py configs/demo/fitnet_retinanet_shapes.py

# The results tables on generated data (tools/demo.py, docs/results.md). demo-quick: a detection
# teacher (8 epochs), the student baseline and GID, one seed (under 15 min on 2 cores);
# demo-table: every 2D distiller, seeds 0 1 2; demo-tables: the detection, LiDAR (bev) and
# audio-visual tables. All resume (finished runs are skipped) and share work_dirs/demo_<suite>.
# One thread per run: on a busy machine several torch threads spin-wait.
demo-quick:
	OMP_NUM_THREADS=1 $(PY) tools/demo.py --quick

demo-table:
	OMP_NUM_THREADS=1 $(PY) tools/demo.py

demo-tables: demo-table
	OMP_NUM_THREADS=1 $(PY) tools/demo.py --suite bev
	OMP_NUM_THREADS=1 $(PY) tools/demo.py --suite av
