"""The paper's Table 1 at a chosen scale: `python -m fullbatch.reproduce --scale micro` (see docs/reproduce.md).

scales - the rows and the documented scale factors; runner - runs the rows (resumable) as ordinary training
runs; cost - projected time on this device and GPU-hours at paper scale; report - the table, figures and CSV.
"""
