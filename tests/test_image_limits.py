"""The declared image size read from encoded headers (`keras_focal.image_limits`) against Pillow, which reads the
same headers independently; the pixel limit at its edge; and the data loaders refusing an oversize file by name."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageSequence

import keras_focal.data as kd
from keras_focal import image_limits
from _bombs import jpeg_header, png_bomb
from _own_data import write_coco


def _encode(fmt, width, height, mode="RGB"):
    buffer = io.BytesIO()
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _pillow_size(data):
    """(height, width) from Pillow's header reader (no pixels are read by Image.open)."""
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the bombs are meant to be big
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _declared(data):
    fmt, height, width = image_limits.declared_size(tf.constant(data))
    return int(fmt), int(height), int(width)


CASES = [("PNG", "RGB"), ("PNG", "L"), ("PNG", "P"), ("JPEG", "RGB"), ("JPEG", "L"), ("GIF", "P"), ("BMP", "RGB")]


@pytest.mark.parametrize("fmt, mode", CASES)
def test_declared_size_matches_pillow(fmt, mode):
    for width, height in ((7, 5), (300, 2), (1, 257)):
        data = _encode(fmt, width, height, mode)
        code, h, w = _declared(data)
        assert image_limits.FORMAT_NAMES[code] == fmt
        assert (h, w) == _pillow_size(data) == (height, width)


def test_the_reference_can_fail():
    """Height and width read the wrong way round would be caught: a non-square image tells them apart."""
    data = _encode("PNG", 300, 2)
    _, h, w = _declared(data)
    assert (w, h) != _pillow_size(data)


def test_bmp_top_down_and_bombs():
    data = bytearray(_encode("BMP", 9, 4))
    data[22:26] = (-4).to_bytes(4, "little", signed=True)  # a negative height: rows stored top-down
    assert _declared(bytes(data))[1:] == (4, 9)
    assert _declared(png_bomb(16000, 16000))[1:] == _pillow_size(png_bomb(16000, 16000)) == (16000, 16000)
    assert _declared(jpeg_header(65500, 300))[1:] == _pillow_size(jpeg_header(65500, 300)) == (300, 65500)


def test_gif_frames_count_towards_the_limit():
    """Every frame's descriptor is summed (giflib decodes them all), against Pillow's frame extents."""
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)) for _ in range(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], comment=b"x" * 600)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        extents = [frame.tile[0][1] for frame in ImageSequence.Iterator(image)]
    reference = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in extents)
    assert len(extents) == 4 and int(image_limits.gif_frame_pixels(tf.constant(data))) == reference
    _check(data, reference)  # exactly at the limit: the frames, not the logical screen (1500 pixels), count
    # A 1 x 1 logical screen with one image descriptor of 60000 x 60000 (and a few bytes of LZW data).
    bomb = (b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0) + b"\x2c" + struct.pack("<HHHHB", 0, 0, 60000, 60000, 0)
            + b"\x02\x02\x4c\x01\x00\x3b")
    for data, pixels in ((data, reference), (bomb, 60000 * 60000)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"GIF frames declare {pixels} pixels in all"):
            _check(data, pixels - 1)


def _check(data, limit):
    image_limits.check_declared_size(tf.constant(data), "x.img", limit)


def test_limit_is_inclusive_and_none_is_no_limit():
    data = _encode("PNG", 20, 10)
    _check(data, 200)  # exactly at the limit
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"x\.img: the PNG header declares 20 x 10 = 200 pixels .* max_image_pixels=199"):
        _check(data, 199)
    _check(png_bomb(16000, 16000), None)


@pytest.mark.parametrize("data, words", [
    (b"version https://git-lfs.github.com/spec/v1\n", "not an encoded JPEG, PNG, GIF or BMP"),
    (b"", "0 bytes"),
    (_encode("PNG", 4, 4)[:20], "PNG header declares no image size"),
    (b"GIF89a\x01", "GIF header declares no image size"),
    (b"\xff\xd8\xff\xe0 not a jpeg", "JPEG"),
])
def test_bytes_that_are_no_image_fail_cleanly(data, words):
    with pytest.raises(tf.errors.InvalidArgumentError, match=words):
        _check(data, 10 ** 6)


def test_limit_arguments():
    assert image_limits.check_limit_argument(np.int64(5), "n") == 5
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="max_image_pixels must be a positive integer or None"):
            image_limits.check_limit_argument(bad, "max_image_pixels")


# ---------------------------------------------------------------------------------------------- data loaders
def _count(ds):
    return sum(1 for _ in ds)


def test_loader_names_an_oversize_file_and_skips_it(tmp_path):
    path = write_coco(str(tmp_path))  # a.jpg 96 x 64, sub/b.png 64 x 80, c.jpg 72 x 72
    with open(tmp_path / "c.jpg", "wb") as f:
        f.write(jpeg_header(65500, 65500))  # a bomb in the training set
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"c\.jpg: the JPEG header declares 65500 x 65500 = "
                                                             r"4290250000 pixels .* max_image_pixels=40000000"):
        _count(kd.load(path))
    # a.jpg, exactly at the limit, is kept; the bomb is left out.
    assert _count(kd.load(path, on_error="skip", max_image_pixels=96 * 64)) == 2
