"""`Configurable`: the base of the plain (non-layer) objects that Keras serializes, such as assigners and box
coders. `keras.saving.serialize_keras_object` stores `get_config()` (the constructor's arguments) and
`deserialize_keras_object` calls `from_config`, the constructor."""


class Configurable:
    """`get_config` returns the constructor's arguments (none here), `from_config` calls the constructor with them,
    and the repr shows them: `IoUAssigner(positive_threshold=0.5, ...)`."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"
