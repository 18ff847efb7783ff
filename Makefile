# The two set-up commands (see README.md).
PY := .venv/bin/python

.PHONY: install test test-fast demo-data demo demo-quick demo-table
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

# The results table on the generated benchmark data (tools/demo.py, docs/results.md): quick = the
# teacher, the student baseline and FGD, one seed; table = every method, seeds 0 1 2 (hours on CPU).
# Both resume: finished runs are skipped. They share work_dirs/demo_shapes (and so the teacher).
demo-quick:
	$(PY) tools/demo.py --quick

demo-table:
	$(PY) tools/demo.py
