"""The torch backend: block modules, the interpreter and checkpoint loading."""
