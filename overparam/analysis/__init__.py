"""The scaling analysis of a sweep (command line: `python -m overparam.analyze`).

  quantities   the registries of quantities and x variables; the per-run table; the
               theory's absolute bounds beside the measured values
  fits         power-law fits with seed-bootstrap intervals; the fit table; per-width
               medians with their seed-bootstrap intervals
  figures      scaling and training-curve figures (PNG and PDF, sized for a paper)
  outdir       the output directory: written hidden, swapped in whole once complete,
               what a kill left recovered; one analysis at a time
  report       report.md and the printed tables; `analyze`, the whole analysis of one
               sweep or of several side by side

Each imports only those above it here, and of the rest of overparam only schema, store,
theory and interrupt (and model, with JAX, inside `quantities.radius_bounds`: Du et al.'s
bound needs each run's initial outputs, which the results do not record).
"""
