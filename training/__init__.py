"""medrobust's ML core: data, preprocessing, models, training, attacks, explanations, reports.

Imports nothing from ``service/``; a researcher can use it from a notebook or the CLI.
"""

__version__ = "0.1.0"
