"""What a scale costs before it runs: each row's projected time on this device, from one measured full-batch step
of the same model, width and block size on two blocks (at least 128 images), doubled for the regularizer (its
forward differences cost a second forward+backward per block; an SGD epoch costs about one step), scaled to the
row's images and steps; and the projected GPU-hours of the same row at paper scale.

The paper-scale figure is a projection from plain PyTorch fp32 throughput measured on one H100 (ResNet-18,
CIFAR images, forward+backward: 14,700 images/s in batches of 128, 3,700 in batches of 32); the regularizer's
forward differences cost a second forward+backward per block. It is not yet a measurement of this code on a GPU.
"""
import time

from fullbatch.config.paths import compose_config
from fullbatch.reproduce.scales import SCALES, row_overrides

H100_IMAGES_PER_SECOND = {128: 14_700, 32: 3_700}  # plain PyTorch, fp32, forward+backward
PAPER_TRAIN, PAPER_TEST = 50_000, 10_000


def _kind(cfg):
    regularized = bool(cfg.hyp.grad_reg.block_strength or cfg.hyp.grad_reg.acc_strength)
    return (bool(cfg.hyp.train_stochastic), regularized, int(cfg.data.batch_size))


def _images(cfg, default_train=PAPER_TRAIN):
    rounds = cfg.data.db.rounds if str(cfg.data.db.name) == "LMDB" else 1
    return (cfg.data.size or default_train) * rounds, cfg.data.test_size or PAPER_TEST


def _measure(cfg_overrides, block, device):
    """Seconds per training image and per validation image for one step of this kind."""
    from fullbatch.train import build_trainer

    images = max(2 * block, 128)
    small = [*cfg_overrides, "data=synthetic", f"data.size={images}", "data.test_size=256",
             "data.subset=first", "data/db=none", f"impl.device={device}", "hyp.train_semi_stochastic=false"]
    trainer = build_trainer(compose_config(small))
    trainer.run_step()  # the first step and validation pay for allocation and autotuning
    trainer.validate()
    started = time.perf_counter()
    trainer.run_step()
    per_image = (time.perf_counter() - started) / images
    started = time.perf_counter()
    trainer.validate()
    return per_image, (time.perf_counter() - started) / 256


def gpu_hours(cfg, regularized, block):
    """Projected hours of one run of `cfg` on one H100 at the plain PyTorch fp32 rates above."""
    images, _ = _images(cfg)
    rate = H100_IMAGES_PER_SECOND[128 if block >= 128 else 32]
    return cfg.hyp.steps * images / rate * (2 if regularized else 1) / 3600


def describe(kind):
    stochastic, regularized, block = kind
    mode = "an SGD epoch" if stochastic else "a full-batch step" + (" with the regularizer" if regularized else "")
    return f"{mode}, blocks of {block}"


def projected(scale, rows, seeds, device="cpu", measure=True, say=lambda text: None):
    """[(row, steps, seconds on this device per seed or None, GPU-hours per seed at this scale, GPU-hours per
    seed at paper scale)]; `say` hears what is being measured, before it is."""
    measured, result = {}, []
    for row in rows:
        cfg = compose_config(row_overrides(scale, row, 0))
        kind = _kind(cfg)
        train_images, test_images = _images(cfg)
        validations = cfg.hyp.steps // cfg.impl.validate_every_nth_step + 1
        seconds = None
        if measure:
            block = kind[2]
            if block not in measured:  # one plain full-batch step per block size; the regularizer doubles it
                say(f"measuring {describe((False, False, block))} at width {scale.width} on this {device}...")
                plain = [item for item in row_overrides(scale, row, 0) if not item.startswith("hyp=")]
                measured[block] = _measure(["hyp=fb1", *plain], block, device)
            per_train, per_test = measured[block]
            per_train *= 2 if kind[1] else 1
            seconds = cfg.hyp.steps * train_images * per_train + validations * test_images * per_test
        paper = gpu_hours(compose_config(row_overrides(SCALES["paper"], row, 0)), kind[1], kind[2])
        result.append((row, cfg.hyp.steps, seconds, gpu_hours(cfg, kind[1], kind[2]), paper))
    return result
