"""Video prediction task: next-frame ConvS5 (or ConvLSTM) models on bouncing digits.

Training is teacher-forced on whole clips of `data.train_frames` frames: the model sees
x_0..x_{T-2} and predicts x_1..x_{T-1} (Bernoulli cross-entropy per pixel, frames in
[0, 1]). Evaluation conditions on the first `eval.context_frames` frames of each test
video and rolls out `eval.horizon` frames in step mode, far beyond the training length;
evaluators (`config.evals`):

- "video_prediction": MSE, PSNR and SSIM of the predicted frames, over the whole horizon
  and over the bands ending at `eval.bands` (e.g. "ssim_1-10" = predicted frames 1..10).
- "video_strips": a PNG per eval, <workdir>/strips/step_*.png: for a few test videos a row
  of true frames above a row of predicted ones (every `eval.strip_stride`-th frame).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.experimental import multihost_utils
from PIL import Image

from jaxml import data, parallel, training
from jaxml.diffusion.image_grid import image_grid
from jaxml.models.conv_lstm import ConvLSTMVideoModel
from jaxml.models.conv_s5 import ConvS5VideoModel, rollout
from jaxml.ssm.optimizer import s5_optimizer
from jaxml.tasks import Task, evaluators
from jaxml.tasks import frame_metrics as fm
from jaxml.training.cli import ConfigError, check_loop_config

log = logging.getLogger(__name__)

MODELS = {"conv_s5": ConvS5VideoModel, "conv_lstm": ConvLSTMVideoModel}


def frames_from_videos(batch: dict, num_frames: int | None = None) -> dict:
    """{"video": uint8 (b, T, H, W, C)} -> {"frames": float32 in [0, 1], first num_frames}."""
    video = np.asarray(batch["video"])[:, :num_frames]
    return {"frames": video.astype(np.float32) / 255.0}


def build_model(config_model, channels: int):
    options = dict(config_model)
    name = options.pop("name")
    if name not in MODELS:
        raise ConfigError(f"config.model.name must be one of {sorted(MODELS)}, got {name!r}")
    try:
        return MODELS[name](channels=channels, **options)
    except TypeError as e:
        raise ConfigError(f"config.model has an option {name} does not take: {e}") from None


def make_loss_fn(model):
    def loss_fn(params, model_state, batch, rng):
        del rng
        frames = batch["frames"]
        logits = model.apply({"params": params, **model_state}, frames[:, :-1], train=True)
        target = frames[:, 1:]
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target))
        metrics = {"mse": jnp.mean(jnp.square(jax.nn.sigmoid(logits) - target))}
        return bce, (model_state, metrics)

    return loss_fn


def validate(config, test_length: int | None = None):
    """Config errors as one ConfigError naming the key (before data or compute)."""
    check_loop_config(
        config,
        {
            "data.batch_size": config.data.batch_size,
            "data.eval_batch_size": config.data.eval_batch_size,
        },
    )
    e = config.eval
    if config.data.train_frames < 2:
        raise ConfigError(f"config.data.train_frames must be >= 2, got {config.data.train_frames}")
    if e.context_frames < 1 or e.horizon < 1:
        raise ConfigError(
            f"config.eval.context_frames ({e.context_frames}) and config.eval.horizon "
            f"({e.horizon}) must be positive"
        )
    if test_length is not None and e.context_frames + e.horizon > test_length:
        raise ConfigError(
            f"config.eval.context_frames + config.eval.horizon = {e.context_frames + e.horizon} "
            f"exceeds the {test_length} frames of the {config.data.name!r} test videos"
        )
    bands = tuple(e.bands)
    if any(b < 1 or b > e.horizon for b in bands) or list(bands) != sorted(set(bands)):
        raise ConfigError(
            f"config.eval.bands must be increasing frame counts in [1, horizon={e.horizon}], "
            f"got {bands}"
        )
    evaluators.check_names(tuple(config.get("evals", ())))


def build(config, mesh, *, workdir=None) -> Task:
    """The video task on `mesh`: state, teacher-forced train step, data, evaluators.

    workdir: where "video_strips" writes its PNGs; None writes none.
    """
    validate(config)
    batch_sharding = parallel.batch_sharding(mesh)
    train_source = data.data_source(config.data.name, "train", config.data.data_dir)
    test_source = data.data_source(config.data.name, "test", config.data.data_dir)
    test_length, height, width, channels = test_source[0]["video"].shape
    validate(config, test_length)
    train_length = train_source[0]["video"].shape[0]
    if config.data.train_frames > train_length:
        raise ConfigError(
            f"config.data.train_frames={config.data.train_frames} exceeds the {train_length} "
            f"frames of the {config.data.name!r} train videos"
        )

    train_frames = config.data.train_frames
    train_iterator = data.train_iterator(
        train_source,
        global_batch_size=config.data.batch_size,
        seed=config.seed,
        preprocess=lambda b: frames_from_videos(b, train_frames),
    )
    model = build_model(config.model, channels)
    o = config.optimizer
    if o.warmup_steps >= config.total_steps:
        raise ConfigError(
            f"config.optimizer.warmup_steps={o.warmup_steps} must be below "
            f"config.total_steps={config.total_steps}"
        )
    tx = s5_optimizer(
        ssm_lr=o.ssm_lr,
        lr_factor=o.lr_factor,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup_steps,
        total_steps=config.total_steps,
        clip_grad_norm=o.get("clip_grad_norm"),
    )
    example = jnp.zeros((1, train_frames - 1, height, width, channels), jnp.float32)
    try:
        state, state_shardings = training.create_train_state(
            lambda rng: model.init(rng, example),
            tx,
            jax.random.PRNGKey(config.seed),
            mesh,
            fsdp_min_size=config.fsdp_min_size,
        )
    except ValueError as e:  # bad model options surface at init (unknown scan_impl, ...)
        raise ConfigError(f"config.model: {e}") from None
    train_step = training.make_train_step(
        make_loss_fn(model), tx, state_shardings=state_shardings, batch_sharding=batch_sharding
    )
    context = {
        "mesh": mesh,
        "batch_sharding": batch_sharding,
        "replicated": parallel.replicated(mesh),
        "state_shardings": state_shardings,
        "model": model,
        "test_source": test_source,
        "workdir": workdir,
    }
    eval_fn = evaluators.make_eval_fn(tuple(config.get("evals", ())), config, context)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    return Task(
        state=state,
        state_shardings=state_shardings,
        train_step=train_step,
        train_iterator=train_iterator,
        batch_sharding=batch_sharding,
        eval_fn=eval_fn,
        summary=(
            f"{type(model).__name__} with {num_params} parameters on {config.data.name} "
            f"({height}x{width}x{channels}, train clips of {train_frames} frames; eval: "
            f"{config.eval.context_frames} context + {config.eval.horizon} predicted frames); "
            f"mesh {dict(mesh.shape)} over {jax.process_count()} processes"
        ),
    )


# ----------------------------------------------------------------------------
# Evaluators
# ----------------------------------------------------------------------------


def make_rollout_fn(model, context_frames: int, horizon: int, *, params_sharding, batch_sharding):
    """jit(params, frames (b, ≥context+horizon, ...)) -> (truth, prediction) (b, horizon, ...)."""

    def run(params, frames):
        prefix = frames[:, :context_frames]
        truth = frames[:, context_frames : context_frames + horizon]
        return truth, rollout(model, {"params": params}, prefix, horizon)

    return jax.jit(
        run,
        in_shardings=(params_sharding, batch_sharding),
        out_shardings=(batch_sharding, batch_sharding),
    )


class _FirstRecords:
    """The first `n` records of a random-access source."""

    def __init__(self, source, n: int):
        self._source, self._n = source, min(n, len(source))

    def __len__(self):
        return self._n

    def __getitem__(self, index):
        if not 0 <= index < self._n:
            raise IndexError(index)
        return self._source[index]


def _rollout_batches(config, context, num_videos: int):
    """(rollout_fn, local eval batches over the first `num_videos` test videos)."""
    key = ("rollout", config.eval.context_frames, config.eval.horizon)
    if key not in context:
        context[key] = make_rollout_fn(
            context["model"],
            config.eval.context_frames,
            config.eval.horizon,
            params_sharding=context["state_shardings"].params,
            batch_sharding=context["batch_sharding"],
        )
    batches = data.eval_batches(
        _FirstRecords(context["test_source"], num_videos),
        global_batch_size=config.data.eval_batch_size,
        preprocess=frames_from_videos,
    )
    return context[key], batches


def band_names(bands, horizon: int) -> list[tuple[str, int, int]]:
    """[("1-10", 0, 10), ("11-40", 10, 40), ...]: frames (1-based) of each band."""
    edges = [0, *bands] + ([horizon] if not bands or bands[-1] != horizon else [])
    return [(f"{a + 1}-{b}", a, b) for a, b in zip(edges[:-1], edges[1:])]


def make_prediction_evaluator(config, context):
    """MSE / PSNR / SSIM of rolled-out frames over the first `eval.num_videos` test videos."""
    horizon = config.eval.horizon
    batch_sharding = context["batch_sharding"]
    replicated = context["replicated"]

    def per_frame_sums(truth, pred, mask):
        w = mask.astype(jnp.float32)[:, None]
        sums = {
            "mse": fm.mse(pred, truth),
            "psnr": fm.psnr(pred, truth),
            "ssim": fm.ssim(pred, truth),
        }
        return {k: jnp.sum(v * w, axis=0) for k, v in sums.items()} | {"count": jnp.sum(w)}

    sums_fn = jax.jit(per_frame_sums, out_shardings=replicated)

    def evaluate(state) -> dict:
        rollout_fn, batches = _rollout_batches(config, context, config.eval.num_videos)
        totals = None
        for local in batches:
            batch = parallel.global_batch(local, batch_sharding)
            truth, pred = rollout_fn(state.params, batch["frames"])
            sums = jax.device_get(sums_fn(truth, pred, batch["mask"]))
            totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
        count = max(float(totals.pop("count")), 1.0)
        per_frame = {k: np.asarray(v) / count for k, v in totals.items()}
        results = {k: float(v.mean()) for k, v in per_frame.items()}
        for name, a, b in band_names(tuple(config.eval.bands), horizon):
            for k, v in per_frame.items():
                results[f"{k}_{name}"] = float(v[a:b].mean())
        context["per_frame"] = per_frame  # for callers that want the curves
        return results

    return evaluate


def strip_image(truth: np.ndarray, pred: np.ndarray, stride: int) -> np.ndarray:
    """(n, T, H, W, C) in [0, 1] -> uint8 image: per video a truth row above a prediction row."""
    idx = np.arange(stride - 1, truth.shape[1], stride)
    rows = []
    for t, p in zip(truth, pred):
        rows += [t[idx], p[idx]]
    frames = np.clip(np.round(np.concatenate(rows) * 255.0), 0, 255).astype(np.uint8)
    return image_grid(frames, num_cols=len(idx))


def make_strip_evaluator(config, context):
    """Writes <workdir>/strips/step_*.png (truth above prediction) for a few test videos."""
    workdir = context.get("workdir")

    def evaluate(state) -> dict:
        if workdir is None:
            return {}
        n = config.eval.strip_videos
        rollout_fn, batches = _rollout_batches(config, context, n)
        batch = parallel.global_batch(next(batches), context["batch_sharding"])
        truth, pred = rollout_fn(state.params, batch["frames"])
        truth = np.asarray(multihost_utils.process_allgather(truth, tiled=True))[:n]
        pred = np.asarray(multihost_utils.process_allgather(pred, tiled=True))[:n]
        if jax.process_index() == 0:
            step = int(jax.device_get(state.step))
            grid = strip_image(truth, pred, config.eval.strip_stride)
            if config.eval.strip_scale > 1:
                s = config.eval.strip_scale
                grid = grid.repeat(s, axis=0).repeat(s, axis=1)
            path = epath.Path(workdir) / "strips" / f"step_{step:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(f, "PNG")
        return {}

    return evaluate
