"""python -m overparam.config: prints docs/sweeps.md's table of fields (`config.markdown`)."""

from overparam.config import markdown

print(markdown(), end="")
