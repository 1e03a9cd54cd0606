"""Detection heads: everything that differs between detectors, behind one interface (`DenseHead`), by name through
the registry (`register_head`, `get_head`, `HEADS`).

- `base.py`: the `DenseHead` interface and the targets from an assigner;
- `registry.py`: names -> head classes;
- `towers.py`: the shared conv towers; `normalizers.py`: the one all-reduce of a loss's normalizers;
  `user_loss.py`: how a user-supplied loss is evaluated;
- one module per head: `retina.py` (RetinaNetHead), `gfl.py` (GFLHead), `tood.py` (TOODHead).
"""

from keras_focal.models.heads.base import DenseHead
from keras_focal.models.heads.registry import HEADS, get_head, register_head
from keras_focal.models.heads.gfl import GFLHead
from keras_focal.models.heads.retina import RetinaNetHead
from keras_focal.models.heads.tood import TOODHead

__all__ = ["DenseHead", "GFLHead", "HEADS", "RetinaNetHead", "TOODHead", "get_head", "register_head"]
