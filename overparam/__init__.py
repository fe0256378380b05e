"""overparam: sweeps of over-parameterized ReLU networks in JAX.

    import overparam
    r = overparam.load("results/du")   # r.runs, r.steps, r.layers: pandas DataFrames
"""

from overparam.store import Results, ResultsError, load

__all__ = ["Results", "ResultsError", "load"]
__version__ = "0.1.0"
