"""Data for the CAM/PAM classifier: images with multi-hot image-level labels (SPEC §1.2, §1.3).

Randomness is explicit: the sampler yields ``(index, sample_seed)`` pairs drawn from
``(seed, epoch)``, and the training transform draws every random choice from a NumPy
generator seeded with ``sample_seed``. An epoch's batches are therefore a function of the
seed and the epoch number only, whatever the number of loader workers and whether the run
was resumed in between: resumed training reproduces an uninterrupted run exactly (on CPU).

Reference: clovaai/BESTIE PAM/utils/LoadData.py (``train_data_loader``, ``test_data_loader``),
https://github.com/clovaai/BESTIE/blob/e2f377d4da49fc57d06ace7ad2af896558008e82/PAM/utils/LoadData.py
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset, Sampler

from bestie.data.io import read_image
from bestie.structures import ImageRecord

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassificationDataset",
    "EvalTransform",
    "SeededSampler",
    "TrainTransform",
    "normalize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float32 [3, H, W] tensor in [0, 1], ImageNet mean/std normalised."""
    return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


def resize_square(image: np.ndarray, size: int) -> Image.Image:
    """uint8 RGB [H, W, 3] -> PIL image of size×size (bilinear, aspect ratio not kept)."""
    return Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)


class TrainTransform:
    """Square resize, random flip, colour jitter, random crop, normalise (SPEC §1.2).

    Args:
        resize: side of the square resize (the official 384).
        crop: side of the random crop (321); must not exceed ``resize``.
        jitter: ColorJitter strengths (brightness, contrast, saturation, hue), e.g.
            (0.3, 0.3, 0.3, 0.1); factors are drawn as torchvision's ColorJitter does and the
            four adjustments are applied in a random order.
    """

    def __init__(self, resize: int, crop: int, jitter: Sequence[float]) -> None:
        if crop > resize:
            raise ValueError(
                f"classifier.crop ({crop}) must not exceed classifier.resize ({resize})"
            )
        if len(jitter) != 4:
            raise ValueError(f"classifier.color_jitter needs 4 values, got {list(jitter)}")
        self.resize = resize
        self.crop = crop
        self.jitter = tuple(float(value) for value in jitter)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Args: image uint8 RGB [H, W, 3]. Returns: float32 [3, crop, crop]."""
        picture = resize_square(image, self.resize)
        if rng.random() < 0.5:
            picture = TF.hflip(picture)
        picture = self._color_jitter(picture, rng)
        top, left = rng.integers(0, self.resize - self.crop + 1, size=2)
        picture = TF.crop(picture, int(top), int(left), self.crop, self.crop)
        return normalize(picture)

    def _color_jitter(self, picture: Image.Image, rng: np.random.Generator) -> Image.Image:
        brightness, contrast, saturation, hue = self.jitter
        factors = [
            rng.uniform(max(0.0, 1.0 - brightness), 1.0 + brightness),
            rng.uniform(max(0.0, 1.0 - contrast), 1.0 + contrast),
            rng.uniform(max(0.0, 1.0 - saturation), 1.0 + saturation),
            rng.uniform(-hue, hue),
        ]
        adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        for which in rng.permutation(4):
            picture = adjust[which](picture, float(factors[which]))
        return picture


class EvalTransform:
    """Square resize to ``size`` and normalise (cue extraction and train-split evaluation)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Args: image uint8 RGB [H, W, 3]. Returns: float32 [3, size, size]."""
        return normalize(resize_square(image, self.size))


Transform = Callable[[np.ndarray, np.random.Generator], torch.Tensor]


class ClassificationDataset(Dataset):
    """Images of a records file with their image-level labels.

    Args:
        records: the split's image records.
        num_classes: C.
        transform: ``(uint8 RGB image, numpy generator) -> float32 [3, S, S]``.

    Items are addressed by ``index`` or ``(index, sample_seed)`` (see :class:`SeededSampler`)
    and are ``(image [3, S, S] float32, label [C] float32 multi-hot, index)``.
    """

    def __init__(
        self, records: Sequence[ImageRecord], num_classes: int, transform: Transform
    ) -> None:
        self.records = list(records)
        self.num_classes = num_classes
        self.transform = transform
        for record in self.records:
            if any(not 0 <= c < num_classes for c in record.classes):
                raise ValueError(
                    f"image {record.id} ({record.name}): class ids {record.classes} "
                    f"outside 0..{num_classes - 1}"
                )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, sample_seed = (key, 0) if isinstance(key, int) else key
        record = self.records[index]
        image = read_image(record.file)
        if image.shape[:2] != (record.height, record.width):
            raise ValueError(
                f"image {record.id}: file {record.file} is {image.shape[:2]}, records say "
                f"{(record.height, record.width)}"
            )
        tensor = self.transform(image, np.random.default_rng(sample_seed))
        label = torch.from_numpy(record.label_vector(self.num_classes))
        return tensor, label, index


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)``, a permutation of the data set drawn from (seed, epoch).

    Call :meth:`set_epoch` before iterating; the same (seed, epoch) gives the same order and
    the same per-sample seeds.
    """

    def __init__(self, num_samples: int, seed: int, *, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        seeds = rng.integers(0, 2**63 - 1, size=self.num_samples)
        return iter([(int(index), int(seeds[index])) for index in order])
