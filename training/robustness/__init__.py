"""Robustness evaluation: attack each model over an ε sweep and report what survives.

The unit of work is a *shard*: a range of images evaluated against every (model, attack, ε),
kept as per-image outcomes (:class:`~training.robustness.results.ShardResult`). Shards merge by
concatenation, and the report is computed from the merged outcomes alone, so a run split across
workers gives exactly the report of the unsplit run. Random starts are drawn per image from
``(seed, sample_id)`` for the same reason. Keep shard boundaries on multiples of the batch size
(:func:`~training.robustness.spec.shard_ranges` does) so every image is also computed in an
identical batch.

Modules, lightest first (this package imports none of them, so a job submission can read
:mod:`.spec` without loading Keras):

- :mod:`.spec`: what an evaluation request needs (attacks, ε sweep, shards); no Keras.
- :mod:`.results`: the JSON records: per-image outcomes, cells, pair comparisons, the report.
- :mod:`.run`: attacking models on images; stored models on a dataset split.
- :mod:`.report`: merging shards and computing the report's statistics.
- :mod:`.render`: the report as a markdown table and a PNG curve.
"""
