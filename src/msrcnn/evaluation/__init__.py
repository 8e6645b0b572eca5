"""COCO evaluation of Mask (Scoring) R-CNN: records, AP under three mask rankings, the
GT-MaskIoU oracle (paper Table 7) and the MaskIoU Pearson correlation (Section 4.4)."""

from msrcnn.evaluation.coco_eval import (
    AP_KEYS,
    coco_summary,
    evaluate_records,
    gt_mask_ious,
    load_coco_gt,
    maskiou_pearson,
    oracle_scores,
    per_class_ap,
    run_coco_eval,
    to_bbox_results,
    to_coco_results,
    to_segm_results,
    validate_records,
)
from msrcnn.evaluation.io import write_json_atomic
from msrcnn.evaluation.records import DetectionRecord, label_to_cat_id_from_coco, make_record
from msrcnn.evaluation.rle import encode_masks, encode_roi_masks

__all__ = [
    "AP_KEYS",
    "DetectionRecord",
    "coco_summary",
    "encode_masks",
    "encode_roi_masks",
    "evaluate_records",
    "gt_mask_ious",
    "label_to_cat_id_from_coco",
    "load_coco_gt",
    "make_record",
    "maskiou_pearson",
    "oracle_scores",
    "per_class_ap",
    "run_coco_eval",
    "to_bbox_results",
    "to_coco_results",
    "to_segm_results",
    "validate_records",
    "write_json_atomic",
]
