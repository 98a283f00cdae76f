"""The base layer: error types and bounded echoes (:mod:`.errors`), Python names and the names
generated code takes (:mod:`.names`), bounds (:mod:`.limits`), the machine (:mod:`.system`) and
all-or-nothing writes (:mod:`.io`). Imports nothing else of dlagraph."""
