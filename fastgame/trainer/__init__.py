"""The GAN application built on the fastgame library: the ``fastgame`` command (:mod:`.cli`)
and what it is made of — one training run (:mod:`.train`), several runs side by side
(:mod:`.compare`), the ICR probe of a run folder (:mod:`.probe`), every option declared once
(:mod:`.options`) and the resolved configuration built from them (:mod:`.config`), the trainer's
methods (:mod:`.methods`), their GAN steps (:mod:`.steppers`) on a step's batches
(:mod:`.batches`), offline data (:mod:`.data`), models (:mod:`.models`), metrics and pictures
(:mod:`.metrics`, :mod:`.evaluation`, :mod:`.plots`), the run folder's sinks (:mod:`.recorder`)
and its atomic files, lock and checkpoints (:mod:`.checkpoint`). docs/architecture.md maps them.

The library (``fastgame.optim``, ``linalg``, ``ops``, ``games``, ``losses``, ``nn``, ``graphs``,
``diagnostics``) never imports this package.
"""
