"""Declared image sizes read from encoded headers, and the pixel limit checked before anything is decoded.

A few hundred bytes of JPEG can declare 65500 x 65500 pixels, and a PNG of all-zero rows compresses about 1000:1,
so the size of the encoded bytes says nothing about the memory their decoding takes (a 750 KB PNG declaring
16000 x 16000 decodes to 768 MB of uint8 pixels). The decoders allocate the declared size before they read the
pixel data, so the only safe check is on the header, before the decode op runs. Pillow does the same
(`PIL.Image.MAX_IMAGE_PIXELS`, checked in `Image.open`), as do the pixel limits of libvips and ImageMagick policies.

Everything here is graph ops (no Python at run time), so a SavedModel that uses it loads and runs with plain
TensorFlow. Where each format keeps its size (all offsets from the first byte of the file):

- PNG (magic `89 50 4E 47 0D 0A 1A 0A`): IHDR is the first chunk (PNG spec 11.2.2: length at byte 8, type `IHDR`
  at 12); width at bytes 16-19, height at 20-23, big-endian.
- JPEG (`FF D8 FF`): the SOFn segment (ITU-T T.81 B.2.2), found by libjpeg's `jpeg_read_header` through
  `tf.io.extract_jpeg_shape`, which stops before the first scan and allocates no pixels.
- GIF (`GIF87a` / `GIF89a`): the logical screen descriptor (GIF89a spec, section 18): width at bytes 6-7, height
  at 8-9, little-endian; and every frame's image descriptor (`gif_frame_pixels`), since giflib decodes all frames.
- BMP (`BM`): BITMAPINFOHEADER width at bytes 18-21, height at 22-25 (int32 little-endian, negative = top-down);
  a 12-byte BITMAPCOREHEADER (its size at 14) has uint16 width at 18 and height at 20.

`tf.io.decode_image` recognises the same magic numbers (`tensorflow/core/kernels/image/decode_image_op.cc`).
"""

import numbers

import tensorflow as tf

# The default pixel limit: 40 megapixels (e.g. 7296 x 5472, a 40 MP camera) decode to 120 MB of uint8 RGB and
# 480 MB as float32 before the resize. Pillow's default MAX_IMAGE_PIXELS is 89,478,485 (a warning; twice that
# is an error), sized for desktop use rather than a shared server.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

# Format codes returned by `declared_size`.
UNKNOWN, JPEG, PNG, GIF, BMP = 0, 1, 2, 3, 4
FORMAT_NAMES = ("unknown", "JPEG", "PNG", "GIF", "BMP")
_MAGIC = ((JPEG, b"\xff\xd8\xff"), (PNG, b"\x89PNG\r\n\x1a\n"), (GIF, b"GIF87a"), (GIF, b"GIF89a"), (BMP, b"BM"))
_HEADER_BYTES = 26  # the furthest field read above ends at byte 25 (BMP height)


def image_format(encoded):
    """int32 scalar: the format code (JPEG, PNG, GIF, BMP) of a string scalar's magic number, UNKNOWN otherwise."""
    code = tf.constant(UNKNOWN, tf.int32)
    for fmt, magic in reversed(_MAGIC):
        code = tf.where(tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic), fmt, code)
    return code


def _header(encoded):
    """uint8 [_HEADER_BYTES]: the first bytes, zero-padded when the string is shorter."""
    padded = tf.strings.join([tf.strings.substr(encoded, 0, _HEADER_BYTES), b"\0" * _HEADER_BYTES])
    return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, _HEADER_BYTES), tf.uint8), tf.int64)


def _uint(header, start, size, big_endian):
    """The unsigned integer in header[start:start + size] (int64)."""
    weights = [256 ** i for i in range(size)]
    if big_endian:
        weights = weights[::-1]
    return tf.reduce_sum(header[start:start + size] * tf.constant(weights, tf.int64))


def _int32_le(header, start):
    value = _uint(header, start, 4, big_endian=False)
    return tf.where(value >= 2 ** 31, value - 2 ** 32, value)


def declared_size(encoded):
    """(format int32, height int64, width int64) that a string scalar's header declares; nothing is decoded.

    height = width = -1 when the header gives no size: bytes of no known format, a PNG whose first chunk is not
    IHDR, a header cut short. A JPEG's SOF is found by libjpeg (`tf.io.extract_jpeg_shape`, header only); bytes
    that start like a JPEG but hold no readable header make that op fail with an InvalidArgumentError.
    """
    fmt = image_format(encoded)
    length = tf.cast(tf.strings.length(encoded), tf.int64)
    header = _header(encoded)
    unknown = tf.constant([-1, -1], tf.int64)

    ihdr = tf.reduce_all(tf.equal(header[12:16], tf.constant(list(b"IHDR"), tf.int64)))
    png = tf.where((length >= 24) & ihdr,
                   tf.stack([_uint(header, 20, 4, True), _uint(header, 16, 4, True)]), unknown)
    gif = tf.where(length >= 10, tf.stack([_uint(header, 8, 2, False), _uint(header, 6, 2, False)]), unknown)
    core = tf.equal(_uint(header, 14, 4, False), 12)  # BITMAPCOREHEADER: uint16 width, height
    bmp = tf.where(core, tf.stack([_uint(header, 20, 2, False), _uint(header, 18, 2, False)]),
                   tf.stack([tf.abs(_int32_le(header, 22)), _int32_le(header, 18)]))
    bmp = tf.where((length >= _HEADER_BYTES) & tf.reduce_all(bmp >= 0), bmp, unknown)
    jpeg = tf.cond(tf.equal(fmt, JPEG),
                   lambda: tf.io.extract_jpeg_shape(encoded, output_type=tf.int32)[:2],
                   lambda: tf.constant([-1, -1], tf.int32))
    size = tf.where(tf.equal(fmt, JPEG), tf.cast(jpeg, tf.int64),
                    tf.where(tf.equal(fmt, PNG), png,
                             tf.where(tf.equal(fmt, GIF), gif, tf.where(tf.equal(fmt, BMP), bmp, unknown))))
    return fmt, size[0], size[1]


def _byte_size(flags):
    """The size in bytes of the colour table that packed `flags` announce (GIF89a spec 18 and 20): bit 7 set,
    3 * 2^(size + 1) with size = the 3 low bits; else 0."""
    present = tf.not_equal(tf.bitwise.bitwise_and(flags, 0x80), 0)
    entries = tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.bitwise.bitwise_and(flags, 7) + 1)
    return tf.where(present, 3 * entries, tf.constant(0, tf.int64))


def gif_frame_pixels(encoded):
    """int64 scalar: the summed width x height of every image descriptor in a GIF (GIF89a spec 20).

    giflib's `DGifSlurp`, which `tf.io.decode_image` calls, decodes every frame into a raster of its descriptor's
    size before TensorFlow looks at the first one, and a descriptor may declare up to 65535 x 65535 whatever the
    logical screen says; so the frames count towards the limit too. The walk reads one block or one data
    sub-block (at most 255 bytes) per step: extension blocks (`21`, label, sub-blocks), image descriptors (`2C`,
    10 bytes, an optional local colour table, the LZW code size, sub-blocks), up to the trailer (`3B`), any other
    byte, or the end of the data.
    """
    data = tf.io.decode_raw(encoded, tf.uint8)
    size = tf.cast(tf.size(data), tf.int64)
    data = tf.concat([tf.cast(data, tf.int64), tf.zeros([16], tf.int64)], 0)  # the descriptor reads up to pos + 9

    def read(pos, offset):
        return tf.gather(data, pos + offset)

    start = 13 + _byte_size(read(0, 10))  # after the header, the logical screen and the global colour table

    def body(pos, in_sub_blocks, pixels, done):
        byte = read(pos, 0)
        # In a run of data sub-blocks: skip one (its size byte, then that many bytes); size 0 ends the run.
        sub_pos, sub_continues = pos + 1 + byte, tf.not_equal(byte, 0)
        # At a block: an extension skips introducer and label, an image descriptor its 10 bytes, the local colour
        # table and the LZW minimum code size; both continue with data sub-blocks.
        is_extension, is_image = tf.equal(byte, 0x21), tf.equal(byte, 0x2C)
        frame = (read(pos, 5) + 256 * read(pos, 6)) * (read(pos, 7) + 256 * read(pos, 8))
        block_pos = tf.where(is_extension, pos + 2, pos + 11 + _byte_size(read(pos, 9)))
        return (tf.where(in_sub_blocks, sub_pos, block_pos),
                tf.where(in_sub_blocks, sub_continues, is_extension | is_image),
                pixels + tf.where(~in_sub_blocks & is_image, frame, tf.constant(0, tf.int64)),
                ~in_sub_blocks & ~is_extension & ~is_image)

    _, _, pixels, _ = tf.while_loop(
        lambda pos, in_sub_blocks, pixels, done: ~done & (pos < size), body,
        (start, tf.constant(False), tf.constant(0, tf.int64), tf.constant(False)),
        maximum_iterations=tf.cast(size, tf.int32), parallel_iterations=1)
    return pixels


def check_declared_size(encoded, name, max_image_pixels, what="max_image_pixels"):
    """An assertion op: `encoded` has a known format, its header declares a size, and height * width is at most
    `max_image_pixels` (None: any size). `name` (a string tensor or str) starts each message, e.g. the element
    `image_bytes[3]` or a file path; `what` is how the limit is named. Run the decode under a control dependency
    on it: the decoder then never allocates a rejected image.
    """
    fmt, height, width = declared_size(encoded)
    name = tf.convert_to_tensor(name, tf.string)
    length = tf.strings.as_string(tf.strings.length(encoded))
    fmt_name = tf.gather(tf.constant(FORMAT_NAMES), fmt)
    known = tf.debugging.Assert(
        tf.not_equal(fmt, UNKNOWN),
        [tf.strings.join([name, " (", length, " bytes) is not an encoded JPEG, PNG, GIF or BMP image "
                          "(unrecognized header)"])], name="check_image_format")
    with tf.control_dependencies([known]):
        readable = tf.debugging.Assert(
            (height >= 0) & (width >= 0),
            [tf.strings.join([name, " (", length, " bytes): the ", fmt_name,
                              " header declares no image size (cut short or corrupt)"])], name="check_image_header")
    if max_image_pixels is None:
        return readable
    limit = int(max_image_pixels)
    with tf.control_dependencies([readable]):
        frames = tf.cond(tf.equal(fmt, GIF), lambda: gif_frame_pixels(encoded),
                         lambda: tf.constant(0, tf.int64))
        gif_frames = tf.debugging.Assert(
            frames <= limit,
            [tf.strings.join([name, ": the GIF frames declare ", tf.strings.as_string(frames),
                              f" pixels in all, over the limit {what}={limit}; nothing was decoded"])],
            name="check_gif_frame_pixels")
    with tf.control_dependencies([gif_frames]):
        pixels = height * width
        return tf.debugging.Assert(
            pixels <= limit,
            [tf.strings.join([name, ": the ", fmt_name, " header declares ", tf.strings.as_string(width), " x ",
                              tf.strings.as_string(height), " = ", tf.strings.as_string(pixels),
                              f" pixels (width x height), over the limit {what}={limit}; nothing was decoded"])],
            name="check_image_pixels")


def check_limit_argument(value, name):
    """`value` as a positive int, or None; a ValueError naming `name` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None (no limit), got {value!r}")
    return int(value)
