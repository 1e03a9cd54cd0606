"""The head registry: `register_head(name)` gives a DenseHead class a name that `RetinaNet(head=name)`, `get_head`
and the command line's `--head` choices (`sorted(HEADS)`) know.

A head written outside the package registers itself the same way; importing its module is what makes its name
known (and lets a `.keras` file holding it reload):

    @register_head("my_head")
    class MyHead(RetinaNetHead):
        ...
"""

import keras

from keras_focal.models.heads.base import DenseHead

# name -> DenseHead subclass; filled by `register_head` as the head modules are imported.
HEADS = {}


def register_head(name):
    """Class decorator: registers a `DenseHead` subclass under `name`, sets its `name` attribute, and registers it
    with Keras serialization (package "keras_focal.heads") unless the class already is, so a `.keras` file of a
    model with this head reloads wherever the module defining it is imported."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a head name must be a non-empty string, got {name!r}")

    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, DenseHead)):
            raise TypeError(f"register_head({name!r}) decorates DenseHead subclasses, got {cls!r}")
        known = HEADS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"head name {name!r} is already registered to {known.__module__}.{known.__qualname__}")
        if keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is not cls:
            keras.saving.register_keras_serializable(package="keras_focal.heads")(cls)
        cls.name = name
        HEADS[name] = cls
        return cls

    return decorator


def get_head(head, **kwargs):
    """A head object from a registered name and its constructor arguments, a serialized config, or a head object.

    `kwargs` are the constructor arguments of a head given by name; with a head object or a config they are an
    error (set them on the object).
    """
    if isinstance(head, str):
        if head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)} (registered with register_head) or a DenseHead "
                             f"object, got {head!r}")
        return HEADS[head](**kwargs)
    if isinstance(head, dict):
        head = keras.saving.deserialize_keras_object(head)
    if not isinstance(head, DenseHead):
        raise ValueError(f"head must be one of {sorted(HEADS)} or a DenseHead object, got {type(head).__name__}")
    if kwargs:
        raise ValueError(f"{sorted(kwargs)} only apply to a head given by name; set them on the "
                         f"{type(head).__name__} object instead")
    return head
