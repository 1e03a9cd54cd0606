"""torch state_dicts read into NumPy and assigned to Keras layers by name, tensor by tensor.

A state_dict maps dotted names (``layer1.0.conv1.weight``) to tensors. `StateDict` hands them out by name and
checks, for each, that it exists and has the shape the Keras layer needs; `finish` reports the names nothing used.
Every error names the tensor. Layouts differ between the frameworks in two places only:

- a conv kernel is ``[out, in, kh, kw]`` in torch and ``[kh, kw, in, out]`` in Keras (channels last);
- BatchNorm's ``weight, bias, running_mean, running_var`` are Keras' ``gamma, beta, moving_mean, moving_variance``
  (torch's eps 1e-5 is the keras-hub ResNet's epsilon); GroupNorm's ``weight, bias`` are ``gamma, beta``.

Reading a ``.pth`` file needs torch (``pip install keras_focal[torch]``); a mapping of arrays needs nothing.
"""

import collections.abc
import os

import numpy as np

# BatchNorm's step counter: not a weight, and absent from torchvision's FrozenBatchNorm2d checkpoints.
BATCHNORM_COUNTER = "num_batches_tracked"


def _to_numpy(name, value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as error:  # noqa: BLE001 - report which tensor could not be read
        raise TypeError(f"state_dict entry {name!r} is not an array: {type(value).__name__}") from error


def read_state_dict(checkpoint):
    """A dict name -> NumPy array from a `torch.save`d state_dict (path) or a mapping name -> array / tensor.

    A checkpoint of torchvision's reference training scripts, ``{"model": state_dict, "optimizer": ...}``, is
    accepted too: its ``"model"`` entry is read.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        path = os.fspath(checkpoint)
        if not os.path.exists(path):
            raise FileNotFoundError(f"torch checkpoint {path!r} does not exist")
        try:
            import torch
        except ImportError as error:
            raise ImportError(f"Reading {path!r} needs torch: pip install 'keras_focal[torch]' (or pass a mapping "
                              "name -> NumPy array instead of a file)") from error
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, collections.abc.Mapping):
        raise TypeError(f"A torch checkpoint must be a path or a mapping name -> array, got {type(checkpoint).__name__}")
    if "model" in checkpoint and isinstance(checkpoint["model"], collections.abc.Mapping):
        checkpoint = checkpoint["model"]
    return {str(name): _to_numpy(name, value) for name, value in checkpoint.items()}


class StateDict:
    """Tensors of a state_dict handed out by name, each at most once, with its expected shape checked."""

    def __init__(self, tensors, source="state_dict"):
        self.tensors = dict(tensors)
        self.source = source
        self.used = set()

    def __contains__(self, name):
        return name in self.tensors

    def take(self, name, shape, target):
        """The array `name`, which must have the torch-layout `shape`, for the Keras weight `target`."""
        if name not in self.tensors:
            raise KeyError(f"{self.source} has no tensor {name!r} (needed for {target})")
        value = self.tensors[name]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"Tensor {name!r} of {self.source} has shape {tuple(value.shape)}, but {target} needs "
                             f"{tuple(shape)}")
        self.used.add(name)
        return value.astype("float32")

    def skip(self, prefix):
        """Marks every tensor under `prefix` as consumed without using it (e.g. a classifier that is replaced)."""
        for name in self.tensors:
            if name.startswith(prefix):
                self.used.add(name)

    def finish(self, ignore=()):
        """Raises if a tensor was left unused (other than BatchNorm step counters and names in `ignore`)."""
        unused = sorted(name for name in self.tensors
                        if name not in self.used and name not in ignore
                        and not name.endswith("." + BATCHNORM_COUNTER) and name != BATCHNORM_COUNTER)
        if unused:
            shown = ", ".join(repr(n) for n in unused[:10]) + (" ..." if len(unused) > 10 else "")
            raise ValueError(f"{self.source} has {len(unused)} unexpected tensor(s), not part of the model: {shown}")


def layers_by_name(model):
    """name -> layer for every layer of `model`, nested models included."""
    found = {}
    stack = [model]
    while stack:
        current = stack.pop()
        for layer in getattr(current, "layers", []):
            found.setdefault(layer.name, layer)
            if hasattr(layer, "layers"):
                stack.append(layer)
    return found


def assign_conv(layer, state, prefix, channel_order=None):
    """Conv2d `prefix`.weight [out, in, kh, kw] (and `prefix`.bias) into a Keras Conv2D.

    `channel_order[j]` is the torch output channel that becomes Keras channel j (None keeps the order).
    """
    kh, kw, cin, cout = layer.kernel.shape
    target = f"layer {layer.name!r}"
    kernel = state.take(f"{prefix}.weight", (cout, cin, kh, kw), target)
    kernel = np.transpose(kernel, (2, 3, 1, 0))
    bias = None
    if layer.use_bias:
        bias = state.take(f"{prefix}.bias", (cout,), target)
    elif f"{prefix}.bias" in state:
        raise ValueError(f"Tensor {prefix + '.bias'!r} has no place: layer {layer.name!r} has no bias")
    if channel_order is not None:
        kernel = kernel[..., channel_order]
        bias = None if bias is None else bias[channel_order]
    layer.kernel.assign(kernel)
    if bias is not None:
        layer.bias.assign(bias)


def assign_batchnorm(layer, state, prefix):
    """BatchNorm2d / FrozenBatchNorm2d `prefix`.{weight, bias, running_mean, running_var} into BatchNormalization."""
    if abs(layer.epsilon - 1e-5) > 1e-12:
        raise ValueError(f"layer {layer.name!r} has epsilon {layer.epsilon}; torch's BatchNorm uses 1e-5")
    channels = (layer.gamma.shape[0],)
    target = f"layer {layer.name!r}"
    for variable, suffix in ((layer.gamma, "weight"), (layer.beta, "bias"), (layer.moving_mean, "running_mean"),
                             (layer.moving_variance, "running_var")):
        variable.assign(state.take(f"{prefix}.{suffix}", channels, target))


def assign_group_norm(layer, state, prefix):
    """GroupNorm `prefix`.{weight, bias} into GroupNormalization (same groups of consecutive channels)."""
    channels = (layer.gamma.shape[0],)
    target = f"layer {layer.name!r}"
    layer.gamma.assign(state.take(f"{prefix}.weight", channels, target))
    layer.beta.assign(state.take(f"{prefix}.bias", channels, target))


def resnet_pairs(blocks_per_stage, block_type, prefix=""):
    """(Keras conv name, Keras BatchNorm name, torch prefix) for torchvision's ResNet and keras-hub's ResNetBackbone.

    torchvision: ``conv1, bn1`` (stem), ``layer{s}.{b}.conv{i}, bn{i}`` and ``downsample.0, .1`` (the 1x1 shortcut).
    keras-hub: ``conv1_conv, conv1_bn`` and ``stack{s-1}_block{b}_{i}_conv, _{i}_bn`` with ``_0_`` the shortcut.
    """
    pairs = [("conv1_conv", "conv1_bn", f"{prefix}conv1", f"{prefix}bn1")]
    convs = 3 if block_type == "bottleneck_block" else 2
    for stage, blocks in enumerate(blocks_per_stage):
        for block in range(blocks):
            keras_block = f"stack{stage}_block{block}"
            torch_block = f"{prefix}layer{stage + 1}.{block}"
            for i in range(1, convs + 1):
                pairs.append((f"{keras_block}_{i}_conv", f"{keras_block}_{i}_bn", f"{torch_block}.conv{i}",
                              f"{torch_block}.bn{i}"))
            pairs.append((f"{keras_block}_0_conv", f"{keras_block}_0_bn", f"{torch_block}.downsample.0",
                          f"{torch_block}.downsample.1"))
    return pairs


def load_resnet(model, state, blocks_per_stage, block_type, prefix=""):
    """Assigns torchvision ResNet weights under `prefix` to the keras-hub ResNet layers found in `model`."""
    layers = layers_by_name(model)
    for conv_name, bn_name, conv_prefix, bn_prefix in resnet_pairs(blocks_per_stage, block_type, prefix):
        if conv_name not in layers:
            if f"{conv_prefix}.weight" in state:  # a shortcut conv the Keras model does not have
                raise ValueError(f"Tensor {conv_prefix + '.weight'!r} has no place: the model has no layer {conv_name!r}")
            continue
        assign_conv(layers[conv_name], state, conv_prefix)
        assign_batchnorm(layers[bn_name], state, bn_prefix)


def is_torch_checkpoint(weights):
    """True for a mapping or a `.pth` / `.pt` path (torch weights), False for Keras weight files and names."""
    if isinstance(weights, collections.abc.Mapping):
        return True
    return isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith((".pth", ".pt"))

