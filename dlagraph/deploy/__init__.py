"""Deployment: one validated request (:mod:`.request`) built by a runtime of the registry
(:mod:`.registry`; PyTorch in :mod:`.pytorch`, OpenVINO in :mod:`.openvino`, ONNX Runtime in
:mod:`.onnxruntime`) through ``dlagraph.optimize`` (:mod:`.optimize`) or timed against the others
(:mod:`.auto`); artifacts of the format registry written and checked by ``dlagraph export``
(:mod:`.export`); the rewrites only dlagraph can make (:mod:`.rewrites`), CenterNet's lowered
deformable convs (:mod:`.deform`) and box decoding (:mod:`.decode`), the CPU benchmark
(:mod:`.bench`)."""
