"""The applications behind ``src/train.py``, ``src/eval.py``: config in, files in the run directory out."""
