# The two set-up commands (see README.md).
PY := .venv/bin/python

.PHONY: install test test-fast demo-data demo
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
