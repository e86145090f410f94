"""gpuhub jobs: "run this notebook as a distributed training job".

A JupyterHub service (:mod:`gpuhub.jobs.app`) validates a job request with the pure
policy (:mod:`gpuhub.jobs.policy`), charges it to the same ledger as notebooks and hands
it to a backend chosen by config (:mod:`gpuhub.jobs.backends`): local ``torchrun``
processes (embedded default) or Kubeflow training jobs.  The HTTP contract is
``docs/jobs-api.md``.
"""
