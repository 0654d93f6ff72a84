"""How far a small val split moves mAP: two models scored on consecutive blocks of val images.

Splits the val ground truth into blocks of ``--block`` images (in file order; with
``config/grids/large_val.yaml`` the first block of 40 is the default's val split), scores
both prediction files on each block with the pipeline's VOC AP
(``bestie.evaluation.coco.evaluate_voc_blocks``), and prints one JSON object:
each model's mAP and the paired difference B - A per block, with their mean and sample std
over the blocks. The std of a model's column is what one draw of a val split of that size
moves its figure; the std of the difference is what it moves a comparison of the two.

    python scripts/val_blocks.py --gt results/bestie_seed0/dataset/val_gt.json \\
        --a results/t3_cam_cues_seed0/instance/pred_val.json \\
        --b results/t3_pam_seed0/instance/pred_val.json
"""

from __future__ import annotations

import argparse
import json
import statistics

from bestie.evaluation.coco import evaluate_voc_blocks, load_coco_json


def summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.mean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="val ground truth (dataset/val_gt.json)")
    parser.add_argument("--a", required=True, help="predictions of model A (pred_val.json)")
    parser.add_argument("--b", required=True, help="predictions of model B (pred_val.json)")
    parser.add_argument("--block", type=int, default=40, help="images per block (default 40)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
    args = parser.parse_args()
    gt = load_coco_json(args.gt)
    a, b = (
        [100.0 * value for value in evaluate_voc_blocks(gt, path, args.block, args.iou)]
        for path in (args.a, args.b)
    )
    diff = [y - x for x, y in zip(a, b, strict=True)]
    print(
        json.dumps(
            {
                "block": args.block,
                "a": [round(x, 2) for x in a],
                "b": [round(x, 2) for x in b],
                "b_minus_a": [round(x, 2) for x in diff],
                "summary": {"a": summary(a), "b": summary(b), "b_minus_a": summary(diff)},
            }
        )
    )


if __name__ == "__main__":
    main()
