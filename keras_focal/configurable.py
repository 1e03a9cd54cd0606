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

    @classmethod
    def resolve(cls, value, default, argument, expected):
        """None (-> `default()`), an instance of `cls`, or its serialized config -> an instance of `cls`; anything
        else is a TypeError saying that `argument` must be `expected`."""
        if value is None:
            return default()
        if isinstance(value, dict):
            import keras

            value = keras.saving.deserialize_keras_object(value)
        if not isinstance(value, cls):
            raise TypeError(f"{argument} must be {expected}, got {type(value).__name__}")
        return value

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"
