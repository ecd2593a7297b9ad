"""Diffusion evaluators for `config.evals` (see jaxml.tasks.evaluators).

All of them judge the same EMA samples of a step: the first one that runs draws
config.eval.num_samples images (micro-batched, config.eval.batch_size) with the fixed
seed config.eval.seed, so every eval's grid shows the same latents, and the others reuse
them.

  samples_grid   <workdir>/samples/step_*.png (first config.eval.grid_size images); nfe
  fd_digits      `metrics.evaluate_digits` (the one digits evaluation, also used by
                 train.sample and the benchmarks): FD-digits against the train split with
                 its floor at the same N, FD against test, KID, k-NN precision/recall and the
                 memorisation rate; for a conditional model also the
                 predicted-class histogram (class_frac_<c>), the share classified as the
                 label it was drawn with (class_match) and FD per class (fd_digits_class_<c>)
  fid            FID against config.eval.fid_reference_stats (nothing when it is unset)
"""

import dataclasses
import logging

import jax
import numpy as np
from etils import epath

from jaxml.diffusion import metrics, recipe
from jaxml.diffusion.image_grid import save_image_grid

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Samples:
    step: int
    images: np.ndarray  # (N, H, W, C) in [-1, 1]
    labels: np.ndarray  # (N,) the class each image was drawn for (0 if unconditional)
    nfe: int


def eval_samples(state, config, context) -> Samples:
    """The step's eval samples, drawn once per step and shared by the evaluators."""
    step = int(jax.device_get(state.step))
    cached = context.get("samples")
    if cached is not None and cached.step == step:
        return cached
    if "sample_fn" not in context:
        context["sample_fn"] = recipe.make_sample_fn(context["network"], config)
    num = config.eval.num_samples
    labels = recipe.default_labels(config, num)
    images, nfe = recipe.sample_images(
        context["sample_fn"],
        state.ema_params,
        jax.random.PRNGKey(config.eval.seed),  # same latents every eval: comparable grids
        config,
        num,
        batch_sharding=context["batch_sharding"],
        replicated=context["replicated"],
        labels=labels,
    )
    context["samples"] = Samples(step, images, labels, nfe)
    return context["samples"]


def make_samples_grid(config, context):
    def evaluate(state) -> dict:
        samples = eval_samples(state, config, context)
        workdir = context.get("workdir")
        if workdir is not None and jax.process_index() == 0 and config.eval.grid_size:
            save_image_grid(
                samples.images[: config.eval.grid_size],
                epath.Path(workdir) / "samples" / f"step_{samples.step:07d}.png",
                scale=config.eval.grid_scale,
            )
        return {"nfe": float(samples.nfe)}

    return evaluate


def class_metrics(images, labels, num_classes: int, data_dir=None) -> dict:
    """Predicted-class histogram, label agreement and FD per class of conditional samples.

    Classes and features come from the FD-digits classifier; the FD of class c compares the
    samples drawn for c with the train images of class c (biased upward at small counts).
    """
    params, _ = metrics.digits_classifier(data_dir=data_dir)
    x = metrics.digits_preprocess(images)
    predicted = np.asarray(
        jax.jit(lambda p, x: metrics.DigitsClassifier().apply({"params": p}, x))(params, x)
    ).argmax(-1)
    results = {f"class_frac_{c}": float(np.mean(predicted == c)) for c in range(num_classes)}
    results["class_match"] = float(np.mean(predicted == labels))
    features = metrics.digits_feature_extractor(data_dir=data_dir)
    generated = np.asarray(features(images))
    train_images, train_labels = _digits_train(data_dir)
    real = np.asarray(features(train_images))
    fds = []
    for c in range(num_classes):
        mu, sigma = metrics.feature_statistics(generated[labels == c])
        mu_ref, sigma_ref = metrics.feature_statistics(real[train_labels == c])
        fds.append(metrics.frechet_distance(mu, sigma, mu_ref, sigma_ref))
        results[f"fd_digits_class_{c}"] = fds[-1]
    results["fd_digits_class_mean"] = float(np.mean(fds))
    return results


def _digits_train(data_dir) -> tuple[np.ndarray, np.ndarray]:
    from jaxml.data import data_source
    from jaxml.data.preprocess import image_generation

    source = data_source("digits", "train", data_dir)
    records = [source[i] for i in range(len(source))]
    batch = image_generation(
        {
            "image": np.stack([r["image"] for r in records]),
            "label": np.array([r["label"] for r in records]),
        }
    )
    return batch["image"], batch["label"]


def digits_eval_metrics(evaluation: dict) -> dict:
    """`metrics.evaluate_digits` under the names the training eval logs (fd_digits is FD
    against the train split; *_floor what as many real unseen digits score)."""
    names = {
        "fd_train": "fd_digits",
        "fd_train_floor": "fd_digits_floor",
        "fd_test": "fd_digits_test",
        "fd_test_floor": "fd_digits_test_floor",
        "kid_train": "kid_digits",
        "kid_train_se": "kid_digits_se",
        "precision": "precision",
        "recall": "recall",
        "memorization_rate": "memorization_rate",
    }
    return {new: float(evaluation[old]) for old, new in names.items()}


def make_fd_digits(config, context):
    data_dir = config.data.data_dir

    def evaluate(state) -> dict:
        samples = eval_samples(state, config, context)
        results = digits_eval_metrics(metrics.evaluate_digits(samples.images, data_dir=data_dir))
        if config.model.num_classes:
            results.update(
                class_metrics(samples.images, samples.labels, config.model.num_classes, data_dir)
            )
        return results

    return evaluate


def make_fid(config, context):
    stats = config.eval.get("fid_reference_stats")
    if not stats:
        log.warning("config.evals names 'fid' but config.eval.fid_reference_stats is unset: no FID")

    def evaluate(state) -> dict:
        if not stats:
            return {}
        images = eval_samples(state, config, context).images
        return {"fid": metrics.fid(images, stats, weights_path=config.eval.inception_weights)}

    return evaluate
