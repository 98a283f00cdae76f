"""Checkpoints: reading files with the maintained readers (:mod:`.read`), loading them into models
with layout conversion and reports (:mod:`.load`), and building without torch's init for a model a
checkpoint fills (:mod:`.instant`)."""
