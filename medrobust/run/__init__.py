"""The run kernel: the ground floor every command stands on.

One config loader (:mod:`~medrobust.run.config`), one seed derivation
(:mod:`~medrobust.run.seeds`), one environment record (:mod:`~medrobust.run.environment`),
one run folder with its lock, resumable state and fingerprint of inputs
(:mod:`~medrobust.run.folder`) and one training loop (:mod:`~medrobust.run.loop`). The JSON
policy for non-finite numbers lives in :func:`medrobust.utils.io.dumps_json`.

Facts come in as arguments: this package imports nothing from ``medrobust`` above
``errors``, ``limits``, ``validation``, ``registry`` and ``utils``.
"""
