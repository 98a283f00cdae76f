"""The IR's ops (:mod:`.core`), each defined once; importing this package registers them."""

from .core import COLORS as COLORS
from .core import OPS as OPS
from .core import BlockRec as BlockRec
from .core import ConvRec as ConvRec
from .core import Expr as Expr
from .core import In as In
from .core import Mem as Mem
from .core import NodeView as NodeView
from .core import Op as Op
from .core import Sym as Sym
from .core import box as box
from .core import op_of as op_of
from .core import register_op as register_op

__all__ = [
    "Expr",
    "In",
    "Sym",
    "NodeView",
    "Mem",
    "Op",
    "OPS",
    "register_op",
    "op_of",
    "COLORS",
    "box",
]
