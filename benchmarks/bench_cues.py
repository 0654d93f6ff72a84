"""Speed of instance-cue extraction (SPEC §1.3, §11) and of the classifier's forward pass.

Prints one JSON object (``common.py`` shape); every time has its wall (``median_ms``) and
process CPU (``median_cpu_ms``) figure:

- ``cue_postprocess``: flip merge + 3×3 smoothing + 15×15 peaks + top-25 + threshold
  on [2, 20, 375, 500] normalised CAMs (an image and its mirror), all 20 classes, as the
  official ``point_extraction.py`` loop does; per image, median over ``--runs``. SPEC §11
  measured the official code at 575 ms (472-664) on 2 idle cores.
- ``official_style``: the official operations rewritten from SPEC §1.3 (one square
  15×15 max-pool, ``topk`` over all 20 maps), timed in the same process, for a fair ratio
  on a busy machine.
- ``cue_postprocess_label_classes``: the same on the image-label classes only (2 of
  20), which is what ``bestie.cues.classifier_cues`` computes.
- ``classifier_images_per_s``: eval-mode forward (with flip: 2 images per image counted
  once each) of the PAM classifier at the synthetic size, per width.

Usage: python benchmarks/bench_cues.py [--runs 5] [--threads 2] [--size 128] [--widths 0.125 0.25]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import emit, result, summary, timed

from bestie.cues import find_peaks, merge_flip, peaks_to_cues, smooth
from bestie.models.classifier import Classifier

HEIGHT, WIDTH, NUM_CLASSES = 375, 500, 20


def make_cams(seed: int = 0) -> torch.Tensor:
    """[2, 20, 375, 500] max-normalised maps: 1-5 Gaussian blobs per map, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.arange(HEIGHT, dtype=torch.float32)[:, None]
    xs = torch.arange(WIDTH, dtype=torch.float32)[None, :]
    cams = torch.zeros(2, NUM_CLASSES, HEIGHT, WIDTH)
    for sample in range(2):
        for cls in range(NUM_CLASSES):
            for _ in range(int(torch.randint(1, 6, (1,), generator=generator))):
                cy, cx = torch.rand(2, generator=generator) * torch.tensor([HEIGHT, WIDTH])
                sigma = 10 + 40 * torch.rand(1, generator=generator)
                weight = torch.rand(1, generator=generator)
                cams[sample, cls] += weight * torch.exp(
                    -((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2)
                )
    cams += 0.02 * torch.rand(cams.shape, generator=generator)
    return cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)


def ours(cams: torch.Tensor, classes: list[int]) -> None:
    merged = merge_flip(cams[0:1, classes], cams[1:2, classes])
    scores, ys, xs = find_peaks(smooth(merged, 3), 15, 25)
    peaks_to_cues(scores[0], ys[0], xs[0], classes, 0.1)


def official_style(cams: torch.Tensor) -> None:
    merged = (cams[0:1] + cams[1:2].flip(-1)) / 2
    heat = F.avg_pool2d(merged, 3, stride=1, padding=1)
    pooled = F.max_pool2d(heat, 15, stride=1, padding=7)
    peaks = heat * (pooled == heat).float()
    scores, index = torch.topk(peaks.view(1, NUM_CLASSES, -1), 25)
    (index // WIDTH).numpy(), (index % WIDTH).numpy(), scores.numpy()
    for cls in range(NUM_CLASSES):
        for score in scores[0, cls].tolist():
            if score < 0.1:
                break


def median_ms(function: Callable[[], None], runs: int) -> dict[str, float]:
    return summary(timed(function, runs), digits=1)


@torch.no_grad()
def classifier_rate(width: float, size: int, runs: int, batch: int = 16) -> dict[str, float]:
    """Images per second of the eval-mode forward, on wall and on process CPU time."""
    torch.manual_seed(0)
    model = Classifier(3, width=width).eval()
    images = torch.randn(batch, 3, size, size)
    times = median_ms(lambda: model(images), runs)
    return {
        "images_per_s": round(batch / times["median_ms"] * 1000, 1),
        "images_per_cpu_s": round(batch / times["median_cpu_ms"] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="classifier input side")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.125, 0.25])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cams = make_cams()
    figures = {
        "cue_postprocess": median_ms(lambda: ours(cams, list(range(NUM_CLASSES))), args.runs),
        "official_style": median_ms(lambda: official_style(cams), args.runs),
        "cue_postprocess_label_classes": median_ms(lambda: ours(cams, [4, 11]), args.runs),
        "classifier": {
            str(width): classifier_rate(width, args.size, args.runs) for width in args.widths
        },
    }
    inputs = {
        "threads": args.threads,
        "runs": args.runs,
        "cams_shape": list(cams.shape),
        "label_classes": [4, 11],
        "classifier_input": [16, 3, args.size, args.size],
        "classifier_widths": args.widths,
    }
    reference = {"official_measured_ms": 575}
    emit(result("cues", inputs, figures, reference=reference))


if __name__ == "__main__":
    main()
