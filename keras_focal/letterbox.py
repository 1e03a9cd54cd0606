"""Aspect-preserving resize ("letterbox"): the longer side scaled to the model's size, the rest padded.

An image of H x W pixels goes into a frame of the model's `image_size` (h, w): it is scaled by
`s = min(h / H, w / W)` to `round(H s) x round(W s)` pixels, placed at the top-left corner and the rest of the frame
is filled with the ImageNet mean colour. torchvision's `GeneralizedRCNNTransform` does the same (resize keeping the
aspect ratio, pad at the bottom and right with zeros after normalization, i.e. with the mean colour before it), so
a converted torchvision detector sees the kind of input it was trained on.

The image occupies the fraction `content = (round(H s) / h, round(W s) / w)` of the frame. Boxes normalized to the
original image become boxes normalized to the frame by multiplying y by content[0] and x by content[1]
(`boxes_to_frame`), and back by dividing (`boxes_from_frame`), so every keras_focal output stays normalized to the
original image, whatever its aspect ratio.
"""

import tensorflow as tf

# The frame's fill colour: ImageNet's mean RGB in [0, 255], which the model's normalization maps to 0.
PAD_COLOUR = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)


def letterbox(images, image_size):
    """Images [H, W, 3] or [B, H, W, 3] (one size per batch) -> (float32 frames [..., h, w, 3] in 0..255,
    content float32 [2] or [B, 2]: the fraction of the frame's height and width the image covers)."""
    images = tf.convert_to_tensor(images)
    batched = images.shape.rank == 4
    frames = tf.cast(images if batched else images[tf.newaxis], tf.float32)
    target_h, target_w = int(image_size[0]), int(image_size[1])
    shape = tf.shape(frames)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    scale = tf.minimum(target_h / height, target_w / width)
    new_h = tf.clip_by_value(tf.cast(tf.round(height * scale), tf.int32), 1, target_h)
    new_w = tf.clip_by_value(tf.cast(tf.round(width * scale), tf.int32), 1, target_w)
    resized = tf.image.resize(frames, tf.stack([new_h, new_w]), method="bilinear")
    colour = tf.constant(PAD_COLOUR, tf.float32)
    # pad_to_bounding_box fills with zeros: pad the image minus the colour, then add the colour back.
    frames = tf.image.pad_to_bounding_box(tf.clip_by_value(resized, 0.0, 255.0) - colour, 0, 0, target_h,
                                          target_w) + colour
    content = tf.stack([tf.cast(new_h, tf.float32) / target_h, tf.cast(new_w, tf.float32) / target_w])
    if batched:
        return frames, tf.tile(content[tf.newaxis], [shape[0], 1])
    return frames[0], content


def _scale(boxes, content):
    scale = tf.concat([content, content], axis=-1)  # (y, x, y, x)
    return scale[:, tf.newaxis, :] if boxes.shape.rank == 3 else scale


def boxes_to_frame(boxes, content):
    """Normalized yxyx boxes of the original image [M, 4] (or [B, M, 4]) -> normalized to the letterbox frame."""
    boxes = tf.cast(boxes, tf.float32)
    return boxes * _scale(boxes, content)


def boxes_from_frame(boxes, content):
    """Normalized yxyx boxes of the letterbox frame -> normalized to the original image, clipped to [0, 1]."""
    boxes = tf.cast(boxes, tf.float32)
    return tf.clip_by_value(boxes / _scale(boxes, content), 0.0, 1.0)
