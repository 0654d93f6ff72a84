"""The instance network's training dataset: shapes, targets, determinism and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bestie.data.instance_dataset import MAX_POINTS, InstanceDataset
from bestie.data.transforms import TrainAugmentation
from bestie.structures import ImageRecord, Instances

C = 3


def _record(index: int, height: int = 65, width: int = 65, points=()) -> ImageRecord:
    return ImageRecord(
        id=100 + index,
        name=f"img_{index}",
        file=f"/nowhere/img_{index}.jpg",
        height=height,
        width=width,
        classes=(0, 2),
        points=tuple(points),
    )


def _images(record: ImageRecord) -> np.ndarray:
    seed = int(record.file.split("_")[-1].split(".")[0])
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (65, 65, 3), dtype=np.uint8)


def _instances(stale_centres: bool = False) -> Instances:
    """Two instances: class 0 rows 10..29 × cols 5..24, class 2 rows 40..59 × cols 30..59."""
    masks = np.zeros((2, 65, 65), bool)
    masks[0, 10:30, 5:25] = True
    masks[1, 40:60, 30:60] = True
    centers = np.zeros((2, 2), np.int64) if stale_centres else None
    return Instances(masks, [0, 2], centers=centers)


def _semantic(record: ImageRecord) -> np.ndarray:
    semantic = np.zeros((65, 65), np.uint8)
    semantic[10:30, 5:25] = 1
    semantic[40:60, 30:60] = 3
    semantic[0, :] = 255
    return semantic


def _dataset(count=4, semantic_loader=_semantic, supervision="image", crop=32, **kwargs):
    points = [(15, 10, 0), (50, 40, 2), (5, 5, 1)]
    records = [_record(i, points=points) for i in range(count)]
    pseudo = {record.id: _instances(stale_centres=True) for record in records}
    return InstanceDataset(
        records,
        pseudo,
        semantic_loader,
        C,
        TrainAugmentation(crop, 0.9, 1.1),
        supervision=supervision,
        image_loader=lambda path: _images(records[int(path.split("_")[-1][0])]),
        **kwargs,
    )


def test_item_shapes_and_dtypes() -> None:
    item = _dataset()[1]
    expected = {
        "image": ((3, 32, 32), torch.float32),
        "semantic": ((32, 32), torch.int64),
        "center": ((C, 32, 32), torch.float32),
        "offset": ((2, 32, 32), torch.float32),
        "weight": ((32, 32), torch.float32),
        "image_label": ((C,), torch.float32),
        "points": ((MAX_POINTS, 3), torch.int64),
        "point_count": ((), torch.int64),
        "instance_count": ((), torch.int64),
        "index": ((), torch.int64),
    }
    assert set(item) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert tuple(item[key].shape) == shape and item[key].dtype == dtype, key
    assert item["image_label"].tolist() == [1.0, 0.0, 1.0] and int(item["index"]) == 1
    assert set(item["semantic"].unique().tolist()) <= {0, 1, 3, 255}
    assert int(item["point_count"]) == 0 and (item["points"] == -1).all()


def test_items_collate_into_batches() -> None:
    batch = next(iter(DataLoader(_dataset(), batch_size=2)))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["points"].shape == (2, MAX_POINTS, 3)


def test_determinism_per_seed_epoch_and_index() -> None:
    first, second = _dataset(seed=5), _dataset(seed=5)
    for key in ("image", "semantic", "center", "offset", "weight"):
        assert torch.equal(first[2][key], second[2][key]), key
    second.set_epoch(3)
    assert not torch.equal(first[2]["image"], second[2]["image"])
    # (index, epoch) keys select the epoch explicitly, whatever set_epoch said.
    assert torch.equal(first[(2, 3)]["image"], second[2]["image"])
    first.set_epoch(3)
    assert torch.equal(first[2]["image"], second[2]["image"])
    assert not torch.equal(_dataset(seed=6)[2]["image"], _dataset(seed=5)[2]["image"])


def test_centre_target_peaks_at_the_recomputed_centroid() -> None:
    dataset = _dataset(count=8, crop=48)
    for index in range(len(dataset)):
        item = dataset[index]
        weight, center, offset = item["weight"].numpy(), item["center"].numpy(), item["offset"]
        assert center.max() <= 1.0
        for class_id, label in ((0, 1), (2, 3)):
            mask = (item["semantic"].numpy() == label) & (weight > 0)
            if not mask.any():
                assert center[class_id].max() < 1.0
                continue
            ys, xs = np.nonzero(mask)
            cy, cx = int(ys.sum()) // len(ys), int(xs.sum()) // len(xs)
            # The stale stored centres (0, 0) are not used; the transformed mask's are.
            assert center[class_id, cy, cx] == 1.0
            assert np.argwhere(center[class_id] == 1.0).tolist() == [[cy, cx]]
            assert offset[0, ys[0], xs[0]] == cy - ys[0] and offset[1, ys[0], xs[0]] == cx - xs[0]


def test_point_supervision_returns_image_label_points_after_augmentation() -> None:
    dataset = _dataset(count=6, supervision="point", crop=48)
    counts = []
    for index in range(len(dataset)):
        item = dataset[index]
        count = int(item["point_count"])
        counts.append(count)
        points = item["points"][:count]
        assert (item["points"][count:] == -1).all()
        assert set(points[:, 2].tolist()) <= {0, 2}  # class 1 is not in the image label
        assert ((points[:, :2] >= 0) & (points[:, :2] < 48)).all()
        for y, x, class_id in points.tolist():
            assert item["center"][class_id, y, x] == 1.0
    assert sum(counts) > 0 and max(counts) <= 2


def test_bad_wsss_map_errors_name_the_image() -> None:
    def out_of_range(record):
        semantic = _semantic(record)
        semantic[3, 3] = C + 1
        return semantic

    with pytest.raises(ValueError, match=r"image 100 \(img_0\).*values \[4\]"):
        _dataset(semantic_loader=out_of_range)[0]
    with pytest.raises(ValueError, match=r"img_0.*WSSS map is \(64, 65\)"):
        _dataset(semantic_loader=lambda record: _semantic(record)[1:])[0]
    with pytest.raises(ValueError, match=r"img_0.*integers"):
        _dataset(semantic_loader=lambda record: _semantic(record).astype(np.float32))[0]


def test_construction_errors() -> None:
    records = [_record(0)]
    augmentation = TrainAugmentation(32, 1.0, 1.0)
    with pytest.raises(ValueError, match="no pseudo instances"):
        InstanceDataset(records, {}, _semantic, C, augmentation)
    with pytest.raises(ValueError, match="supervision"):
        InstanceDataset(records, {100: _instances()}, _semantic, C, augmentation, supervision="x")
    many = [_record(0, points=[(1, 1, 0)] * 5)]
    with pytest.raises(ValueError, match="max_points"):
        InstanceDataset(
            many, {100: _instances()}, _semantic, C, augmentation, supervision="point", max_points=4
        )
    with pytest.raises(ValueError, match="class ids"):
        InstanceDataset(records, {100: _instances()}, _semantic, 2, augmentation)


def test_zero_pseudo_instances_give_all_zero_targets() -> None:
    records = [_record(0)]
    dataset = InstanceDataset(
        records,
        {100: Instances.empty(65, 65)},
        _semantic,
        C,
        TrainAugmentation(32, 1.0, 1.0),
        image_loader=lambda path: _images(records[0]),
    )
    item = dataset[0]
    assert int(item["instance_count"]) == 0
    assert item["center"].abs().sum() == 0 and item["weight"].sum() == 0
