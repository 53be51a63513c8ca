"""Benchmarks that print same-run tables: ``python -m lightseg.benchmark {train,infer} --help``.

Every configuration runs in a fresh process (:func:`lightseg.benchmark.common.run_isolated`), with warm-up,
median of repeated steps and best of several passes; MONAI's networks are measured in the same run as controls,
because these machines drift by 1.4x between runs and only same-run ratios mean anything.
"""
