"""Backends of the IR, each reading the op definitions of :mod:`dlagraph.ir.ops`.

* ``torch`` -- the interpreter (an fx graph over the layout's module tree), the module library both
  backends share, and checkpoint loading. Style anchor: timm's ``dla.py`` (module names, block
  classes, init), which its modules equal key for key.
* ``codegen`` -- readable standalone source. Style anchor: fx's code generator (one statement per
  node, names from the graph), laid out as ``ruff format`` would, nanoGPT-style comments.
* ``diagram`` / ``render`` -- Graphviz diagrams from a curated view of the graph (never a dump of its
  attributes, unlike networkx's ``to_pydot``).
"""
