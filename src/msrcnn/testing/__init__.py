"""Test and benchmark tooling, kept apart from the production code that training and inference run.

Nothing under ``msrcnn`` outside this subpackage imports it; it imports the production code, never the
other way round.

* :mod:`msrcnn.testing.host_syncs`: :func:`~msrcnn.testing.host_syncs.count_host_syncs` counts the
  operations that make the host wait for a GPU, on any device (it patches ``Tensor.tolist`` and torch's
  factories globally while it counts).
* :mod:`msrcnn.testing.gpu_paths`: :func:`~msrcnn.testing.gpu_paths.gpu_paths` makes every device, the
  CPU included, run the GPU variants of :mod:`msrcnn.ops.gpu_paths`.
* :mod:`msrcnn.testing.crowded`: :func:`~msrcnn.testing.crowded.generate_crowded` writes a synthetic
  crowded COCO set (large grayscale images, many small instances).
"""
