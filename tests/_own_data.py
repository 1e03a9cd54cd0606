"""Writers of tiny datasets in the three annotation formats, shared by the data-source and script tests.

Every writer takes pixel boxes `(x0, y0, x1, y1)` (0-based, continuous coordinates) and class names, so a test can
compare what `load` gives back with the same numbers normalized in NumPy.
"""

import json
import os

import numpy as np
from PIL import Image


def write_image(path, width, height, seed=0, mode="RGB", fmt=None):
    """A random image of `mode` ("RGB", "L", "RGBA", "P") saved by PIL; returns the RGB uint8 array PIL reads back."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "L":
        image = image.convert("L")
    elif mode == "RGBA":
        image = image.convert("RGBA")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    image.save(path, format=fmt)
    return np.asarray(Image.open(path).convert("RGB"))


# Three images of different sizes; image 2 has no objects. Boxes in pixels (x0, y0, x1, y1) and class names.
IMAGES = [
    ("a.jpg", 96, 64, [((4, 6, 40, 30), "cat"), ((50, 10, 90, 60), "dog")]),
    ("sub/b.png", 64, 80, [((0, 0, 64, 80), "dog"), ((10, 20, 30, 44), "bird")]),
    ("c.jpg", 72, 72, []),
]
CLASSES = ("bird", "cat", "dog")


def write_coco(root, images=IMAGES, category_ids={"bird": 7, "cat": 3, "dog": 12}, crowd=(), extra=None):
    """instances.json + images under `root`; `crowd` names (image index, object index) pairs marked iscrowd."""
    doc = {"images": [], "annotations": [], "categories": [
        {"id": cid, "name": name, "supercategory": "animal"} for name, cid in category_ids.items()]}
    for i, (name, w, h, objects) in enumerate(images):
        write_image(os.path.join(root, name), w, h, seed=i)
        doc["images"].append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        for j, ((x0, y0, x1, y1), cls) in enumerate(objects):
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": 100 + i,
                                       "category_id": category_ids[cls], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                       "area": (x1 - x0) * (y1 - y0), "iscrowd": int((i, j) in crowd)})
    doc.update(extra or {})
    path = os.path.join(root, "instances.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def write_voc(root, images=IMAGES, difficult=(), splits=None):
    """Annotations/*.xml in VOC's 1-based pixels (x_voc = x + 1), JPEGImages/; `splits`: {name: [image index]}."""
    os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
    for i, (name, w, h, objects) in enumerate(images):
        stem = os.path.splitext(os.path.basename(name))[0]
        write_image(os.path.join(root, "JPEGImages", stem + ".jpg"), w, h, seed=i)
        parts = [f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}</height>"
                 "<depth>3</depth></size>"]
        for j, ((x0, y0, x1, y1), cls) in enumerate(objects):
            parts.append(f"<object><name>{cls}</name><difficult>{int((i, j) in difficult)}</difficult><bndbox>"
                         f"<xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax>"
                         "</bndbox></object>")
        with open(os.path.join(root, "Annotations", stem + ".xml"), "w") as f:
            f.write("".join(parts) + "</annotation>")
    for split, members in (splits or {}).items():
        os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
        with open(os.path.join(root, "ImageSets", "Main", split + ".txt"), "w") as f:
            f.write("".join(os.path.splitext(os.path.basename(images[i][0]))[0] + "\n" for i in members))
    return root


def write_yolo(root, images=IMAGES, names=CLASSES, as_mapping=False, splits=None):
    """data.yaml, images/<split>/..., labels/<split>/*.txt; `splits`: {"train": [image index], ...}."""
    splits = splits or {"train": list(range(len(images))), "val": list(range(len(images)))}
    index = {n: k for k, n in enumerate(names)}
    for split, members in splits.items():
        for i in members:
            name, w, h, objects = images[i]
            stem = os.path.splitext(os.path.basename(name))[0]
            write_image(os.path.join(root, "images", split, stem + ".jpg"), w, h, seed=i)
            if not objects and i % 2 == 0:
                continue  # no label file: an image without objects
            os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
            with open(os.path.join(root, "labels", split, stem + ".txt"), "w") as f:
                for (x0, y0, x1, y1), cls in objects:
                    f.write(f"{index[cls]} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                            f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n")
    names_yaml = ("\n" + "".join(f"  {k}: {n}\n" for k, n in enumerate(names))) if as_mapping else \
        "[" + ", ".join(names) + "]\n"
    path = os.path.join(root, "data.yaml")
    with open(path, "w") as f:
        f.write("path: .\n" + "".join(f"{s}: images/{s}\n" for s in splits) + f"names: {names_yaml}")
    return path


def expected_boxes(objects, width, height, order=CLASSES):
    """NumPy float64 reference: normalized yxyx boxes and class indices of one image's objects."""
    boxes = np.array([[y0 / height, x0 / width, y1 / height, x1 / width] for (x0, y0, x1, y1), _ in objects],
                     np.float64).reshape(-1, 4)
    classes = np.array([order.index(c) for _, c in objects], np.int64)
    return np.clip(boxes, 0, 1), classes
