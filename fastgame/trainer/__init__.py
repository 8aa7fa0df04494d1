"""The GAN application built on the fastgame library: the ``fastgame`` command (:mod:`.cli`)
and what it is made of — one training run (:mod:`.train`), several runs side by side
(:mod:`.compare`), the ICR probe of a run folder (:mod:`.probe`), the resolved configuration
(:mod:`.config`), the trainer's methods (:mod:`.methods`) and their GAN steps (:mod:`.steppers`),
offline data (:mod:`.data`), models (:mod:`.models`), metrics and pictures (:mod:`.metrics`,
:mod:`.evaluation`, :mod:`.plots`) and atomic run-folder files (:mod:`.checkpoint`).

The library (``fastgame.optim``, ``linalg``, ``ops``, ``games``, ``losses``, ``nn``, ``graphs``,
``diagnostics``) never imports this package.
"""
