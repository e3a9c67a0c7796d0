"""The in-training measurements (`analysis=...`), handed to the trainer as a hook so that training code never
imports the analysis code. Called after each step with the lr that step used; returns the values to add to
the step's metrics row (nothing, at no cost, for `analysis=none`)."""
from functools import partial

from fullbatch.analysis.gradient_noise import block_gradient_statistics
from fullbatch.analysis.sharpness import full_batch_hvp, hutchinson_trace, top_eigenvalue


class TrainingAnalysis:
    def __init__(self, analysis_cfg, seed):
        self.cfg, self.seed = analysis_cfg, seed

    def __call__(self, trainer, lr):
        analysis = self.cfg
        if not (analysis.block_statistics or analysis.sharpness):
            return {}
        last = trainer.step == trainer.total_steps
        if not last and (analysis.final_only or trainer.step % analysis.check_every_nth_step):
            return {}
        values = dict(param_norm=float(trainer.param_norm_sq()) ** 0.5)
        if analysis.block_statistics:
            values.update(block_gradient_statistics(trainer.step_inputs(), trainer.blocks()[: analysis.blocks]))
        if analysis.sharpness:
            values.update(self.sharpness(trainer, lr))
        return values

    def sharpness(self, trainer, lr):
        """Top Hessian eigenvalue (and trace) of the full training loss at the current weights, and 2 / lr."""
        analysis = self.cfg
        hvp = partial(full_batch_hvp, trainer.step_inputs(), trainer.blocks()[: analysis.blocks])
        values = dict(top_eigenvalue=top_eigenvalue(hvp, trainer.params, analysis.power_iterations, self.seed),
                      two_over_lr=2.0 / lr if lr > 0 else float("inf"))
        if analysis.trace_samples:
            values["hessian_trace"] = hutchinson_trace(hvp, trainer.params, analysis.trace_samples, self.seed)
        return values
