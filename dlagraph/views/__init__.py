"""Views of a network: Graphviz diagrams of the aggregation tree (:mod:`.diagram`), their
time-limited rendering (:mod:`.render`) and the interactive HTML view (:mod:`.html`, its assets in
``view/``). No torch: state_dict names come from the IR."""
