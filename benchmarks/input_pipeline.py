"""Input pipeline throughput: decode, augmentation and anchor encoding, against torchvision's DataLoader.

    python benchmarks/input_pipeline.py                          # both heads at 512 / 640 / 800 px
    python benchmarks/input_pipeline.py --sizes 640 --rounds 3   # the 640 px table only

The benchmark writes its own data into a temporary folder: --images 640x480 JPEGs, each with --boxes boxes, and a
COCO-format JSON, read with `keras_focal.data.load`. Every row is `make_dataset(image_size=(S, S), batch_size=8)`
over those files, repeated, decoded in the pipeline; rows differ only in augmentation, mosaic
(`MosaicMixup(mosaic=1.0)`: every image a mosaic, unless the row says other rates) and encoder. torchvision's row
is `CocoDetection` (PIL decode) with a resize + random flip transform, in a `DataLoader(batch_size=8,
num_workers=2)`.

Method: the rows take turns (one measurement of each row per round, --rounds rounds). A measurement opens a fresh
iterator, pulls --warmup-batches untimed batches (tracing, filling the buffers) and then times the next batches for
--seconds seconds: no pipeline runs in the background while another is timed. Each row prints its median images/s
and the median over rounds of its rate divided by the "decode + resize + pad" rate of the same round, which is what
holds from one machine, or one moment of a shared machine, to the next; a mosaic row also prints its ratio to the
same row without mosaic (selected with --rows, that row must be selected too: "--rows augmentation" selects all the
augmented rows).
"""

import argparse
import json
import os
import re
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASE = "decode + resize + pad"
MOSAIC = " + mosaic"
MOSAIC_PART = r" \+ mosaic.*?(?= \+ |$)"  # " + mosaic" and its settings, up to the next " + "


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 640, 800], help="square training sizes")
    p.add_argument("--images", type=int, default=64, help="JPEG files written")
    p.add_argument("--boxes", type=int, default=20, help="boxes per image")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="turns of every row")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    p.add_argument("--warmup-batches", type=int, default=3)
    p.add_argument("--rows", nargs="*", default=None, help="only rows whose name contains one of these words")
    p.add_argument("--no-torchvision", action="store_true", help="skip torchvision's DataLoader row")
    return p.parse_args(argv)


def write_coco_files(folder, num_images, num_boxes, seed=0):
    """640x480 JPEGs of random rectangles and their COCO JSON (3 categories); returns the JSON path."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        pixels = np.full((480, 640, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(num_boxes):
            x, y = rng.uniform(0, 560), rng.uniform(0, 400)
            w, h = rng.uniform(16, 640 - x), rng.uniform(16, 480 - y)
            w, h = min(w, 300.0), min(h, 300.0)
            pixels[int(y):int(y + h), int(x):int(x + w)] = rng.integers(0, 255, 3)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 4)),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        name = f"{i:05d}.jpg"
        tf.io.write_file(os.path.join(folder, name), tf.io.encode_jpeg(pixels, quality=90))
        images.append({"id": i + 1, "file_name": name, "width": 640, "height": 480})
    categories = [{"id": k, "name": f"class{k}"} for k in (1, 2, 3)]
    path = os.path.join(folder, "instances.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path


def coco_examples(json_path):
    """The unbatched `(image uint8 [H, W, 3], {"boxes", "classes"})` examples of a COCO JSON, decoded in tf.data."""
    from keras_focal.data import load

    return load(json_path)


def keras_focal_rows(examples, size, batch_size, rows):
    """{row name: a function returning a fresh iterator of batches} for one image size."""
    from keras_focal.data import MosaicMixup, make_dataset
    from keras_focal.models.heads import GFLHead, RetinaNetHead

    retina = RetinaNetHead().anchor_encoder()
    gfl = GFLHead().anchor_encoder()

    def pipeline(**kwargs):
        ds = make_dataset(examples, image_size=(size, size), batch_size=batch_size, repeat=True, **kwargs)
        return lambda: iter(ds)

    table = {
        BASE: pipeline(),
        "+ augmentation": pipeline(augment=True),
        "+ augmentation + RetinaNet encoder": pipeline(augment=True, encoder=retina),
        "RetinaNet encoder alone, max_boxes=100": pipeline(encoder=retina),
        "RetinaNet encoder alone, max_boxes=20": pipeline(encoder=retina, max_boxes=20),
        "+ augmentation + GFL ATSS encoder": pipeline(augment=True, encoder=gfl),
        "+ augmentation + mosaic": pipeline(augment=True, mosaic=MosaicMixup(mosaic=1.0)),
        "+ augmentation + mosaic 0.5, mixup 0.5": pipeline(augment=True, mosaic=MosaicMixup(mosaic=0.5, mixup=0.5)),
        "+ augmentation + mosaic closed (rates 0)": pipeline(augment=True, mosaic=MosaicMixup(mosaic=0.0)),
        "+ augmentation + mosaic + RetinaNet encoder": pipeline(augment=True, encoder=retina,
                                                               mosaic=MosaicMixup(mosaic=1.0)),
        "+ augmentation + mosaic + GFL ATSS encoder": pipeline(augment=True, encoder=gfl,
                                                             mosaic=MosaicMixup(mosaic=1.0)),
        "GFL ATSS encoder alone, max_boxes=100": pipeline(encoder=gfl),
        "GFL ATSS encoder alone, max_boxes=20": pipeline(encoder=gfl, max_boxes=20),
    }
    return {k: v for k, v in table.items() if k == BASE or rows is None or any(r in k for r in rows)}


def import_torchvision():
    """torchvision with its C++ ops replaced: the registry's build links CUDA libraries that a CPU torch cannot load,
    and `import torchvision` registers fake kernels for `nms` / `qnms`, which must exist first. The data loading used
    here never calls them."""
    import torch

    try:
        import torchvision
    except RuntimeError:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_torchvision.library = lib  # the definitions live as long as this object
        import torchvision
    return torchvision


def torchvision_row(json_path, size, batch_size):
    """torchvision's CocoDetection + DataLoader(num_workers=2): PIL decode, resize to (size, size), random flip."""
    import torch

    torchvision = import_torchvision()
    from torchvision.transforms.v2 import functional as F

    folder = os.path.dirname(json_path)

    def transforms(image, anns):
        w, h = image.size
        image = F.resize(F.pil_to_tensor(image), [size, size], antialias=False)
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes *= torch.tensor([size / w, size / h, size / w, size / h])
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes = torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        return image, {"boxes": boxes, "labels": labels}

    class Repeated(torch.utils.data.Dataset):  # the tf.data rows repeat; so does this one
        def __init__(self, base, times=1000):
            self.base, self.times = base, times

        def __len__(self):
            return len(self.base) * self.times

        def __getitem__(self, i):
            return self.base[i % len(self.base)]

    dataset = Repeated(torchvision.datasets.CocoDetection(folder, json_path, transforms=transforms))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=2, shuffle=False,
                                         collate_fn=lambda batch: (torch.stack([b[0] for b in batch]),
                                                                   [b[1] for b in batch]))
    return lambda: iter(loader)


def measure(make_iterator, batch_size, seconds, warmup_batches):
    """Images per second of a fresh iterator after its warmup batches."""
    iterator = make_iterator()
    for _ in range(warmup_batches):
        next(iterator)
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        count += batch_size
    rate = count / (time.perf_counter() - start)
    del iterator
    return rate


def without_mosaic(name):
    """The row a mosaic row is compared with: the same pipeline without mosaic (None for other rows)."""
    return re.sub(MOSAIC_PART, "", name) if MOSAIC in name else None


def run_size(rows, args):
    """{row: (median images/s, median ratio to BASE, median ratio to the row without mosaic or None)}, the ratios
    taken within each round."""
    rates = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, make_iterator in rows.items():
            rates[name].append(measure(make_iterator, args.batch_size, args.seconds, args.warmup_batches))

    def ratio(name, peer):
        if peer not in rates:
            return None
        return statistics.median(a / b for a, b in zip(rates[name], rates[peer]))

    return {name: (statistics.median(r), ratio(name, BASE), ratio(name, without_mosaic(name)))
            for name, r in rates.items()}


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="kf-input-") as folder:
        json_path = write_coco_files(folder, args.images, args.boxes)
        examples = coco_examples(json_path)
        print(f"{args.images} JPEGs 640x480, {args.boxes} boxes each; batch {args.batch_size}; "
              f"{args.rounds} rounds of {args.seconds:.0f} s per row; {os.cpu_count()} CPU cores")
        for size in args.sizes:
            rows = keras_focal_rows(examples, size, args.batch_size, args.rows)
            if not args.no_torchvision:
                rows["torchvision CocoDetection + DataLoader(num_workers=2), resize + flip"] = torchvision_row(
                    json_path, size, args.batch_size)
            results = run_size(rows, args)
            print(f"\n{size} x {size} px")
            print(f"| pipeline | images/s | ratio to {BASE} | ratio to the row without mosaic |\n|---|---|---|---|")
            for name, (rate, ratio, plain) in results.items():
                print(f"| {name} | {rate:.0f} | {ratio:.2f} | {'' if plain is None else f'{plain:.2f}'} |")


if __name__ == "__main__":
    main()
