"""From a resolved config to a finished run directory (:func:`embudget.pipeline.run.run`).

- :mod:`~.build`: the dataset, fresh backbones, the budget and the fit/evaluate calls of a config;
- :mod:`~.rundir`: opening (or resuming) a run directory and the files a finished run leaves;
- :mod:`~.pretrain`: Θ0, cached; :mod:`~.retrain`: the candidates retrained and one chosen;
- :mod:`~.run`: ``train`` and ``search`` runs through those stages, to a ``RunResult``.
"""
