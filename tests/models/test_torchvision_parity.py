"""Every torchvision port (msrcnn.models.torchvision_ports, and the RoI heads' post-processing) against the
installed torchvision's original on the same inputs, on the CPU and with the GPU variants forced
(``gpu_paths()``); and the check of the installed torchvision against the tested range.

A torchvision release that changes what a port adapts makes these fail: the ports' inventory is the
docstring of :mod:`msrcnn.models.torchvision_ports`.
"""

import contextlib
import copy
import importlib.metadata
import subprocess
import sys
import warnings

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
from torchvision.models.detection.rpn import RegionProposalNetwork as TorchvisionRPN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign as TorchvisionMultiScaleRoIAlign

import msrcnn.models.torchvision_ports as ports
from model_testing import synthetic_batch, torchvision_pair
from msrcnn.models import MaskScoringRoIHeads
from msrcnn.models.torchvision_ports.box_coder import BoxCoder
from msrcnn.models.torchvision_ports.poolers import MultiScaleRoIAlign
from msrcnn.models.torchvision_ports.rpn import Matcher, RegionProposalNetwork
from msrcnn.models.torchvision_ports.transform import MaskScoringTransform
from msrcnn.testing.gpu_paths import gpu_paths
from msrcnn.testing.host_syncs import count_host_syncs
from msrcnn_testing import script_env

PATHS = pytest.mark.parametrize("paths", [contextlib.nullcontext, gpu_paths], ids=["cpu", "gpu-paths"])


def clustered_boxes(n: int, g: torch.Generator, size: float = 200.0, clusters: int = 12) -> torch.Tensor:
    """``[n, 4]`` boxes around a few centres (so that NMS suppresses), some tiny, some partly outside."""
    centres = torch.rand(clusters, 2, generator=g) * size
    xy = centres[torch.randint(clusters, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 5 - 10
    wh = torch.rand(n, 2, generator=g) * 50
    wh[: n // 10] *= 0.01  # below any min_size
    return torch.cat([xy, xy + wh], 1)


# --------------------------------------------------------------------------- box_coder.BoxCoder
@PATHS
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)], ids=["rpn", "roi-heads"])
def test_box_coder_encodes_and_decodes_as_torchvision(paths, weights):
    g = torch.Generator().manual_seed(0)
    proposals = [clustered_boxes(n, g) + torch.tensor([0.0, 0.0, 1.0, 1.0]) for n in (60, 35)]
    references = [p + torch.randn(p.shape, generator=g) * 3 for p in proposals]
    for r in references:
        r[:, 2:] = torch.maximum(r[:, 2:], r[:, :2] + 0.5)
    codes = torch.randn(95, 4 * 3, generator=g) * 2
    codes[:5, 2::4] = 9.0  # beyond bbox_xform_clip
    theirs = det_utils.BoxCoder(weights)
    ours = BoxCoder.from_box_coder(theirs)
    with paths():
        encoded, decoded = ours.encode(references, proposals), ours.decode(codes, proposals)
    for got, expected in zip(encoded, theirs.encode(references, proposals)):
        assert torch.equal(got, expected)
    assert torch.equal(decoded, theirs.decode(codes, proposals))


# --------------------------------------------------------------------------- rpn.Matcher
@PATHS
def test_matcher_equals_torchvision(paths):
    g = torch.Generator().manual_seed(0)
    iou = (torch.rand(6, 300, generator=g) * 8).floor() / 10  # many ties
    iou[2] = 0.05  # a GT box whose best anchors are all weak
    expected = det_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou.clone())
    with paths(), count_host_syncs() as syncs:
        got = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou.clone())
    assert torch.equal(got, expected) and syncs.total == 0


# --------------------------------------------------------------------------- rpn.RegionProposalNetwork
@PATHS
def test_rpn_filters_proposals_as_torchvision(paths):
    torch.manual_seed(0)
    anchors = AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3)
    theirs = TorchvisionRPN(
        anchors, RPNHead(8, 3), 0.7, 0.3, 256, 0.5, {"training": 80, "testing": 60},
        {"training": 40, "testing": 25}, 0.5, score_thresh=0.3,
    )  # fmt: skip
    theirs.min_size = 2.0
    ours = RegionProposalNetwork.from_rpn(theirs)
    theirs.eval(), ours.eval()
    g = torch.Generator().manual_seed(1)
    per_level = [300, 120, 40]
    proposals = torch.stack([clustered_boxes(sum(per_level), g) for _ in range(3)])
    objectness = torch.randn(3 * sum(per_level), 1, generator=g)
    shapes = [(200, 190), (150, 200), (180, 120)]
    expected = theirs.filter_proposals(proposals, objectness, shapes, per_level)
    with paths():
        got = ours.filter_proposals(proposals, objectness, shapes, per_level)
    for boxes, scores, tv_boxes, tv_scores in zip(*got, *expected):
        assert 0 < len(tv_boxes) <= 25
        assert torch.equal(boxes, tv_boxes) and torch.equal(scores, tv_scores)


# --------------------------------------------------------------------------- poolers.MultiScaleRoIAlign
@PATHS
@pytest.mark.parametrize("names", ["0123", "0"], ids=["four-levels", "one-level"])
def test_pooler_equals_torchvision(paths, names):
    g = torch.Generator().manual_seed(0)
    features = {k: torch.rand(2, 8, 64 // 2**i, 96 // 2**i, generator=g) for i, k in enumerate("0123")}
    boxes = []
    for _ in range(2):
        xy = torch.rand(40, 2, generator=g) * 200
        boxes.append(torch.cat([xy, xy + 4 + torch.rand(40, 2, generator=g) * 200], 1))
    shapes = [(256, 384), (250, 380)]
    tv = TorchvisionMultiScaleRoIAlign(list(names), 7, 2)
    ours = MultiScaleRoIAlign.from_pooler(tv)
    expected = tv(features, boxes, shapes)
    with paths(), count_host_syncs() as syncs:
        got = ours(features, boxes, shapes)
    assert torch.equal(got, expected)
    assert ours.scales == tv.scales
    if paths is gpu_paths and len(names) > 1:
        assert syncs.total == 1  # one read of the per-level counts


# --------------------------------------------------------------------------- transform.MaskScoringTransform
def transform_pair(**options):
    theirs = GeneralizedRCNNTransform(96, 128, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    return theirs, MaskScoringTransform.from_transform(theirs, **options)


@PATHS
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_transform_preprocesses_as_torchvision(paths, training):
    images, targets = synthetic_batch(3)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 70, 90, generator=g), images[1], torch.rand(3, 120, 61, generator=g)]
    theirs, ours = transform_pair()
    theirs.train(training), ours.train(training)
    given = targets if training else None
    expected_images, expected_targets = theirs(images, copy.deepcopy(given))
    with paths():
        got_images, got_targets = ours(images, copy.deepcopy(given))
    assert torch.equal(got_images.tensors, expected_images.tensors)
    assert got_images.image_sizes == expected_images.image_sizes
    for got, expected in zip(got_targets or [], expected_targets or []):
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in expected)


@PATHS
@pytest.mark.parametrize("fast_paste", [False, True], ids=["torchvision-paste", "fast-paste"])
def test_transform_postprocesses_as_torchvision(paths, fast_paste):
    g = torch.Generator().manual_seed(0)
    sizes, originals = [(96, 128), (128, 96)], [(75, 100), (300, 225)]
    results = []
    for (h, w), n in zip(sizes, (12, 7)):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 20.0, h - 20.0])
        boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * 40], 1)
        masks = torch.rand(n, 1, 28, 28, generator=g)
        results.append({"boxes": boxes, "labels": torch.ones(n, dtype=torch.int64), "masks": masks})
    theirs, ours = transform_pair(fast_paste=fast_paste, mask_output="image")
    theirs.eval(), ours.eval()
    expected = theirs.postprocess(copy.deepcopy(results), sizes, originals)
    with paths():
        got = ours.postprocess(copy.deepcopy(results), sizes, originals)
    for x, y in zip(expected, got):
        assert torch.equal(y["boxes"], x["boxes"]) and torch.equal(y["labels"], x["labels"])
        assert y["masks"].shape == x["masks"].shape
        if fast_paste and paths is gpu_paths:  # the batched paste: torchvision's to float32 rounding
            assert (y["masks"] - x["masks"]).abs().max() <= 1e-6
            differ = (x["masks"] > 0.5) != (y["masks"] > 0.5)
            assert ((x["masks"][differ] - 0.5).abs() <= 1e-6).all()
        else:
            assert torch.equal(y["masks"], x["masks"])


# --------------------------------------------------------------------------- roi_heads.postprocess_detections
@PATHS
def test_roi_heads_postprocess_detections_as_torchvision(paths):
    """MaskIoU head off, Soft-NMS off: torchvision's post-processing (decode, clip, filters, NMS, top k)."""
    torch.manual_seed(0)
    classes = 5
    theirs = RoIHeads(
        TorchvisionMultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(8 * 7 * 7, 32), FastRCNNPredictor(32, classes),
        0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 30,
        mask_roi_pool=TorchvisionMultiScaleRoIAlign(["0"], 14, 2), mask_head=MaskRCNNHeads(8, [8], 1),
        mask_predictor=MaskRCNNPredictor(8, 8, classes),
    )  # fmt: skip
    ours = MaskScoringRoIHeads.from_roi_heads(theirs, maskiou_head=None)
    ours.box_coder = BoxCoder.from_box_coder(ours.box_coder)  # as MaskScoringRCNN builds it
    assert ours.maskiou_head is None and not ours.soft_nms.enabled
    g = torch.Generator().manual_seed(2)
    proposals = [clustered_boxes(n, g) + torch.tensor([0.0, 0.0, 0.5, 0.5]) for n in (150, 90)]
    proposals[0][:4, 2] = proposals[0][:4, 0]  # zero width: removed as small boxes
    logits = torch.randn(240, classes, generator=g) * 2
    regression = torch.randn(240, 4 * classes, generator=g) * 0.5
    shapes = [(180, 200), (160, 150)]
    expected = theirs.postprocess_detections(logits, regression, proposals, shapes)
    with paths():
        got = ours.postprocess_detections(logits, regression, proposals, shapes)
    for boxes, scores, labels, tv_boxes, tv_scores, tv_labels in zip(*got, *expected):
        assert 0 < len(tv_boxes) <= 30
        assert (
            torch.equal(boxes, tv_boxes) and torch.equal(scores, tv_scores) and torch.equal(labels, tv_labels)
        )


# --------------------------------------------------------------------------- the whole model
def test_model_on_the_gpu_paths_gives_torchvision_outputs():
    """Inference on the GPU paths against torchvision's MaskRCNN (its own poolers, NMS and paste); each
    port's CPU path is compared above."""
    tv, ms = torchvision_pair()
    assert type(tv.roi_heads.box_roi_pool) is TorchvisionMultiScaleRoIAlign
    assert isinstance(ms.roi_heads.box_roi_pool, MultiScaleRoIAlign)
    images, _ = synthetic_batch(2)
    with torch.no_grad():
        expected = tv(images)
        with gpu_paths():
            got = ms(images)
    for x, y in zip(expected, got):
        assert len(x["boxes"]) > 0
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(x[key], y[key]), key
        assert (x["masks"] - y["masks"]).abs().max() <= 1e-6
        # binarised at 0.5: equal except where torchvision's value is within rounding of the threshold
        differ = (x["masks"] > 0.5) != (y["masks"] > 0.5)
        assert ((x["masks"][differ] - 0.5).abs() <= 1e-6).all()


# --------------------------------------------------------------------------- the tested range
REQUIRES = ["torch<2.16,>=2.14.1", "torchvision<0.30,>=0.29.2", 'onnx>=1.16; extra == "export"']


@pytest.fixture
def declared(monkeypatch):
    """msrcnn's metadata declaring ``torchvision>=0.29.2,<0.30`` (as setuptools writes it), no escape hatch."""
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: REQUIRES if name == "msrcnn" else None)
    monkeypatch.delenv(ports.UNTESTED_TORCHVISION_ENV, raising=False)


def test_the_range_is_read_from_msrcnn_s_metadata_lower_bound_first(declared):
    assert ports.torchvision_range() == ">=0.29.2,<0.30"


@pytest.mark.parametrize("version", ["0.29.2", "0.29.2+cu132", "0.29.10+cpu"])
def test_a_torchvision_in_range_passes(declared, monkeypatch, version):
    monkeypatch.setattr(torchvision, "__version__", version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ports.check_torchvision()


@pytest.mark.parametrize("version", ["0.29.1", "0.30.0", "0.30.0a0+git1234", "1.0"])
def test_a_torchvision_out_of_range_fails_in_one_line(declared, monkeypatch, version):
    monkeypatch.setattr(torchvision, "__version__", version)
    with pytest.raises(ports.TorchvisionVersionError) as error:
        ports.check_torchvision()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"torchvision {version} is outside the range msrcnn is tested with")
    assert message.endswith(
        'pip install "torchvision>=0.29.2,<0.30" (or set MSRCNN_UNTESTED_TORCHVISION=1 to run anyway)'
    )


def test_the_escape_hatch_turns_the_error_into_one_warning(declared, monkeypatch):
    monkeypatch.setattr(torchvision, "__version__", "0.30.0")
    monkeypatch.setenv(ports.UNTESTED_TORCHVISION_ENV, "1")
    with pytest.warns(ports.UntestedTorchvisionWarning) as caught:
        ports.check_torchvision()
    assert len(caught) == 1
    assert "torchvision 0.30.0 is outside" in str(caught[0].message)


def test_without_msrcnn_s_metadata_nothing_is_checked(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "requires", not_installed)
    monkeypatch.setattr(torchvision, "__version__", "0.1.0")
    assert ports.torchvision_range() is None
    ports.check_torchvision()


def test_the_installed_torchvision_passes_the_installed_range():
    assert ports.torchvision_range() is not None
    ports.check_torchvision()


def test_importing_msrcnn_models_with_an_untested_torchvision_fails():
    code = "import torchvision; torchvision.__version__ = '0.99.0'; import msrcnn.models"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=script_env(MSRCNN_UNTESTED_TORCHVISION=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "msrcnn.models.torchvision_ports.TorchvisionVersionError: torchvision 0.99.0 is outside"
    )
