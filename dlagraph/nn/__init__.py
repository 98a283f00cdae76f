"""The module library (torch only): the classes and helpers the interpreter runs and generated
files copy (:mod:`.modules`), and timm's model API on built networks (:mod:`.timm`)."""
