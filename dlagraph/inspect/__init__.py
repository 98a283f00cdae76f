"""Inspecting networks: a checkpoint's spec recovered from its tensors (:mod:`.infer`) and two
networks compared level by level and tensor by tensor (:mod:`.diff`)."""
