"""The scaling analysis of a sweep (command line: `python -m overparam.analyze`; the whole
analysis of one sweep or of several side by side: `pipeline.run_analysis`).

  variables       the registry of the variables fits are taken against (width, n, depth,
                  output scale)
  groups          the swept settings as columns (SWEPT_COLUMNS, derived from
                  config.SWEPT), the groups of runs they make, the labels of several sweeps
  quantities      the registry of quantities: definitions, labels, predictions, how each
                  is computed
  per_run         the per-run table (one row per run x quantity x layer) and what each row
                  is in a figure (fitted, censored, off the axis, diverged)
  bounds          the theory's absolute bounds beside the measured values (Du et al.'s
                  radius and loss bounds); rebuilds initial networks in JAX
  fits            power-law fits with seed-bootstrap intervals; the fit table; per-width
                  medians with their seed-bootstrap intervals
  style           style and layout of the figures: the one place of their sizes, fonts,
                  colours, markers
  scaling         the scaling figures (a quantity against a swept variable, log-log)
  generalization  the figure of the test error against Arora et al.'s measure
  curves          the training curves over steps
  figures         the figure files (PNG and PDF), which a sweep gets, stale ones removed
  tables          the fit table as printed text and as Markdown
  rates           the convergence rates against the kernel's; the censored runs' counts
  report          report.md's prose, with its tables and figures
  outdir          the output directory: written hidden, swapped in whole once complete,
                  what a kill left recovered; one analysis at a time
  pipeline        `run_analysis`: the order in which the analysis loads, computes and
                  writes, and where

Each imports only those above it here, and of the rest of overparam only config (the
field declarations), schema, store, theory and interrupt; and model, with JAX, inside
`bounds.radius_bounds` (Du et al.'s bound needs each run's initial outputs, which the
results do not record).
"""
