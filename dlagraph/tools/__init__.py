"""Checkpoint tools: a checkpoint's spec (:mod:`.infer`) and two networks compared (:mod:`.diff`)."""
