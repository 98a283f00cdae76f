"""Deployment: fast CPU inference (:mod:`.optimize`, with CenterNet's deformable convs lowered in
:mod:`.deform`), its benchmark (:mod:`.bench`) and CenterNet's box decoding (:mod:`.decode`)."""
