"""The scaling analysis of a sweep (command line: `python -m overparam.analyze`).

  quantities   the registries of quantities and x variables; the per-run table
  fits         power-law fits with seed-bootstrap intervals; the fit table
  figures      scaling and training-curve figures
  report       report.md and the printed tables; `analyze`, the whole analysis

Each imports only those above it here, and of the rest of overparam only schema, store and
theory.
"""
