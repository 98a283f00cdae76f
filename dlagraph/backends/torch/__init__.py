"""The torch backend: the interpreter, the module library both backends share, and weights."""
