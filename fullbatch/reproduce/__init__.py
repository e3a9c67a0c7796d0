"""The paper's Table 1 at a chosen scale: `python -m fullbatch.reproduce --scale micro` (see docs/reproduce.md).

scales - the rows, their lengths and seeds at each scale; runner - one row and seed as an ordinary training run
(resumable), and all of them one after the other; parallel and job - `--jobs N` child processes; launchers -
submitit jobs (SLURM, local); cost - projected time on this device and GPU-hours at paper scale; intervals -
95% t and Welch intervals; report - the table, figures and CSV; wall_time - the measured time of a scale run in
pieces. May import every layer: it is an entry point.
"""
