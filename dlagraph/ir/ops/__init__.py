"""The IR's ops, each defined once: its record, module, call, static shape, cost, comment and look.

This is dlagraph's one lowering layer (the role torch.fx's node semantics play for its interpreter
and its codegen). A node of the DAG is ``{"op": name, "rec": record, "meta": provenance, "layout":
backend details}``; its op, looked up in :data:`OPS`, says everything a backend needs, each
method given one :class:`NodeView` ``v`` of the node (its record read as ``v["field"]``):

* ``module(v)`` -- the torch module the node owns, as a constructor :class:`Expr` over
  helper and torch names (``conv_bn_relu(16, 32, 3, stride=2)``); symbolic arguments (``in_chans``,
  ``num_classes``) are :class:`Sym` values;
* ``call(v)`` -- how the inputs become the call in ``forward``, an :class:`Expr` whose
  leaves are :class:`In` (the k-th input, in port order);
* ``channels`` / ``reduction`` / ``shape`` -- static output facts;
* ``layers`` / ``params`` / ``macs`` / ``tensors`` -- parameter and MAC counts, state_dict entries;
* ``lint`` / ``join_problem`` -- what the graph check and the shape analysis verify at the node;
* ``comment`` / ``look`` -- the generated-code comment and the diagram node.

The interpreter evaluates these expressions into an fx graph, the code generator prints them, the
analysis sums them and the diagram draws them; none of them switches on op names. To add an op,
subclass :class:`Op`, give it a record and register it with :func:`register_op` (README "How to add
an op"). No torch here.

One module per family: :mod:`.core` (the :class:`Op` base, the expressions, the registry),
:mod:`.backbone`, :mod:`.aggregation`, :mod:`.heads` and :mod:`.centernet`. Importing this package
registers the built-in ops, in that order.
"""

# isort: off
# the families register their ops when imported, in the order listings show them
from .core import (
    COLORS as COLORS,
    OPS as OPS,
    ChannelsRec as ChannelsRec,
    Expr as Expr,
    In as In,
    Mem as Mem,
    NodeView as NodeView,
    Op as Op,
    Sym as Sym,
    box as box,
    is_name as is_name,
    op_of as op_of,
    register_op as register_op,
)
from .backbone import (
    Block as Block,
    BlockRec as BlockRec,
    Conv as Conv,
    ConvRec as ConvRec,
    Downsample as Downsample,
    Input as Input,
    Output as Output,
    OutputRec as OutputRec,
    PoolRec as PoolRec,
    Project as Project,
    ProjectRec as ProjectRec,
)
from .aggregation import (
    Aggregate as Aggregate,
    AggregateRec as AggregateRec,
    IdaNode as IdaNode,
    IdaNodeRec as IdaNodeRec,
)
from .heads import (
    Classifier as Classifier,
    ClassifierRec as ClassifierRec,
    Dropout as Dropout,
    DropoutRec as DropoutRec,
    Flatten as Flatten,
    GlobalPool as GlobalPool,
    Interpolate as Interpolate,
    InterpolateRec as InterpolateRec,
    LogSoftmax as LogSoftmax,
    Upsample as Upsample,
    UpsampleRec as UpsampleRec,
)
from .centernet import (
    DeformConv as DeformConv,
    DeformConvRec as DeformConvRec,
    HeadBranch as HeadBranch,
    HeadBranchRec as HeadBranchRec,
    SumNode as SumNode,
    SumNodeRec as SumNodeRec,
)

# isort: on

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
    "is_name",
    "ChannelsRec",
]
