"""Small models and synthetic batches for the model tests."""

import torch

from msrcnn.models import build_model

SMALL = dict(
    backbone=dict(
        name="r18_fpn",
        returned_layers=[1, 2, 3, 4],
        fpn_channels=16,
        anchor_sizes=[[8], [16], [32], [64], [128]],
    ),
    head=dict(conv_channels=16, fc_dim=32),
    box_representation_size=64,
    mask_head_channels=16,
    min_size=96,
    max_size=128,
    box_batch_size_per_image=32,
    box_positive_fraction=0.5,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=100,
)


def small_model(num_classes: int = 4, **overrides):
    """The small model; ``head={...}`` / ``backbone={...}`` overrides add to SMALL's (``head=None``: no head)."""
    torch.manual_seed(0)
    kwargs = {**SMALL, **overrides}
    for group in ("backbone", "head"):
        if isinstance(overrides.get(group), dict):
            kwargs[group] = {**SMALL[group], **overrides[group]}
    return build_model(num_classes=num_classes, **kwargs)


def rect_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def synthetic_batch(n_images: int = 2, size: int = 96, seed: int = 0):
    """Images with two or three rectangles each and matching targets."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i in range(n_images):
        img = torch.rand(3, size, size, generator=g) * 0.2
        boxes, labels, masks = [], [], []
        for y0, x0, s, lab in [(10, 10, 30, 1), (50, 40, 40, 2), (20, 60, 24, 3)][: 2 + i % 2]:
            masks.append(rect_mask(size, size, y0, y0 + s, x0, x0 + s))
            img[:, y0 : y0 + s, x0 : x0 + s] = 0.5 + 0.15 * lab
            boxes.append([x0, y0, x0 + s, y0 + s])
            labels.append(lab)
        images.append(img)
        targets.append(
            dict(
                boxes=torch.tensor(boxes, dtype=torch.float32),
                labels=torch.tensor(labels, dtype=torch.int64),
                masks=torch.stack(masks),
            )
        )
    return images, targets


def torchvision_pair():
    """torchvision's ``MaskRCNN`` and a ``MaskScoringRCNN`` of the same small R18-FPN body and the same
    weights (the MaskIoU head's own excepted), in eval mode, every candidate box kept."""
    import copy

    from torchvision.models.detection import MaskRCNN

    from msrcnn.models import MaskScoringRCNN, build_backbone

    torch.manual_seed(0)
    spec = build_backbone("r18_fpn", returned_layers=[1, 2, 3, 4], fpn_channels=16)
    kwargs = dict(min_size=96, max_size=128, box_score_thresh=0.0)
    tv = MaskRCNN(copy.deepcopy(spec.body), num_classes=4, **kwargs).eval()
    ms = MaskScoringRCNN(copy.deepcopy(spec.body), num_classes=4, head={"conv_channels": 16}, **kwargs).eval()
    missing, unexpected = ms.load_state_dict(tv.state_dict(), strict=False)
    assert not unexpected
    assert missing and all("maskiou" in k for k in missing)
    return tv, ms
