"""`python -m keras_focal`: the `keras-focal` command line."""

from keras_focal.cli import console

if __name__ == "__main__":
    console()
