"""In-memory data structures shared by every stage.

Conventions (DESIGN.md §4): points and centres are (y, x); class ids are 0-based; semantic
maps use 0 for background, c+1 for class c and 255 for ignore; offsets are (dy, dx) =
centre - pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_LABEL = 255


@dataclass
class Instances:
    """A set of K instances of one image.

    Attributes:
        masks: bool [K, H, W].
        labels: int64 [K], 0-based class ids.
        scores: float32 [K] or None (pseudo labels and ground truth carry no score).
        centers: int64 [K, 2] as (y, x) or None. For pseudo instances this is the truncated
            cv2 centroid (SPEC §2.2), which may lie outside a non-convex mask.
        cues: float32 [K, 4] as (y, x, class, score) of the cue that selected each
            instance, or None.
    """

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None
    centers: np.ndarray | None = None
    cues: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.masks.ndim != 3:
            raise ValueError(f"Instances.masks must be [K, H, W], got shape {self.masks.shape}")
        count = self.masks.shape[0]
        if self.labels.shape[0] != count:
            raise ValueError(f"Instances: {count} masks but {self.labels.shape[0]} labels")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            _check_rows("scores", self.scores, count)
        if self.centers is not None:
            self.centers = np.asarray(self.centers, dtype=np.int64).reshape(-1, 2)
            _check_rows("centers", self.centers, count)
        if self.cues is not None:
            self.cues = np.asarray(self.cues, dtype=np.float32).reshape(-1, 4)
            _check_rows("cues", self.cues, count)

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @classmethod
    def empty(cls, height: int, width: int, *, with_scores: bool = False) -> Instances:
        """Zero instances of an image of the given size."""
        scores = np.zeros((0,), np.float32) if with_scores else None
        return cls(np.zeros((0, height, width), bool), np.zeros((0,), np.int64), scores)

    def select(self, keep: np.ndarray) -> Instances:
        """The instances at the given indices or boolean selector, in that order."""
        return Instances(
            self.masks[keep],
            self.labels[keep],
            None if self.scores is None else self.scores[keep],
            None if self.centers is None else self.centers[keep],
            None if self.cues is None else self.cues[keep],
        )


def _check_rows(name: str, array: np.ndarray, count: int) -> None:
    if array.shape[0] != count:
        raise ValueError(f"Instances: {count} masks but {array.shape[0]} {name}")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split, as written in the records artifact (``dataset/{split}.json``).

    Attributes:
        id: integer image id, unique in the split (the COCO ``image_id``).
        name: the data set's own name for the image (a VOC id such as ``2007_000032``).
        file: absolute path to the image file.
        height, width: image size in pixels.
        classes: sorted 0-based class ids of the image-level label.
        points: (y, x, class) ground-truth points for point supervision; empty when the
            data set has none.
    """

    id: int
    name: str
    file: str
    height: int
    width: int
    classes: tuple[int, ...] = ()
    points: tuple[tuple[int, int, int], ...] = field(default_factory=tuple)

    def label_vector(self, num_classes: int) -> np.ndarray:
        """The image-level label as a float32 multi-hot vector [num_classes]."""
        vector = np.zeros((num_classes,), np.float32)
        vector[list(self.classes)] = 1.0
        return vector

    def points_array(self) -> np.ndarray:
        """Ground-truth points as int64 [N, 3] (y, x, class)."""
        return np.asarray(self.points, dtype=np.int64).reshape(-1, 3)
