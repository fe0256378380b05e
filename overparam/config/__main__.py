"""python -m overparam.config: prints the README's table of fields (`config.markdown`)."""

from overparam.config import markdown

print(markdown(), end="")
