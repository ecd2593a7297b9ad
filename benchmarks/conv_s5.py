"""ConvS5 vs ConvLSTM side by side: train-step time vs sequence length, generation time per
frame, and prediction quality after the same training budget, far beyond the training length.

  nice -n 5 python benchmarks/conv_s5.py            # ~10 min on a shared 2-core CPU

Both models have the same frame encoder/decoder, width and (nearly) the same number of
parameters (ConvS5 with state_size = 4·d_model matches a ConvLSTM of d_model channels).
Timings alternate the two models (A B A B ...) and report medians, so a machine shared
with other jobs slows both alike; the ratio is the number to read. Writes
benchmarks/results/conv_s5_<backend>.json, a plot (.png) and a rollout strip of both
models on test videos (conv_s5_rollout_<backend>.png: truth, ConvS5, ConvLSTM rows).
"""

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxml import data
from jaxml.models.conv_lstm import ConvLSTMVideoModel
from jaxml.models.conv_s5 import ConvS5VideoModel, rollout
from jaxml.ssm.optimizer import s5_optimizer
from jaxml.tasks import frame_metrics as fm

RESULTS = Path(__file__).parent / "results"


def make_models(d_model: int, downsample: int):
    return {
        "conv_s5": ConvS5VideoModel(
            d_model=d_model, n_layers=2, downsample=downsample, state_size=4 * d_model
        ),
        "conv_lstm": ConvLSTMVideoModel(d_model=d_model, n_layers=2, downsample=downsample),
    }


def num_params(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def make_train_step(model, tx):
    def loss_fn(params, frames):
        logits = model.apply({"params": params}, frames[:, :-1])
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, frames[:, 1:]))

    @jax.jit
    def step(params, opt_state, frames):
        loss, grads = jax.value_and_grad(loss_fn)(params, frames)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def make_tx(total_steps: int):
    return s5_optimizer(
        ssm_lr=2e-3,
        lr_factor=1.0,
        weight_decay=0.01,
        warmup_steps=min(20, total_steps // 5),
        total_steps=total_steps,
        clip_grad_norm=1.0,
    )


def time_train_steps(models, lengths, batch, size, repeats):
    """Median seconds per train step (after compilation) per model and sequence length."""
    out = {name: {} for name in models}
    for length in lengths:
        frames = jax.random.uniform(jax.random.PRNGKey(length), (batch, length + 1, size, size, 1))
        steps = {}
        for name, model in models.items():
            params = model.init(jax.random.PRNGKey(0), frames[:, :-1])["params"]
            tx = make_tx(100)
            step = make_train_step(model, tx)
            state = (params, tx.init(params))
            t0 = time.perf_counter()
            jax.block_until_ready(step(*state, frames))
            steps[name] = (step, state, time.perf_counter() - t0)
        times = {name: [] for name in models}
        for _ in range(repeats):  # alternate the models: shared-machine noise hits both
            for name, (step, state, _) in steps.items():
                t0 = time.perf_counter()
                jax.block_until_ready(step(*state, frames))
                times[name].append(time.perf_counter() - t0)
        for name in models:
            out[name][length] = {
                "step_s": float(np.median(times[name])),
                "compile_and_first_step_s": steps[name][2],
            }
        ratio = out["conv_lstm"][length]["step_s"] / out["conv_s5"][length]["step_s"]
        print(
            f"L={length}: "
            + ", ".join(f"{n} {out[n][length]['step_s']:.3f} s" for n in models)
            + f"; ConvLSTM/ConvS5 = {ratio:.2f}",
            flush=True,
        )
    return out


def time_generation(models, params, prefix, num_frames, repeats):
    """Seconds per generated frame (rollout after a prefix; compiled once)."""
    out = {}
    fns = {
        name: jax.jit(lambda p, x, m=model: rollout(m, {"params": p}, x, num_frames))
        for name, model in models.items()
    }
    for name in models:
        jax.block_until_ready(fns[name](params[name], prefix))
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name in models:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[name](params[name], prefix))
            times[name].append(time.perf_counter() - t0)
    for name in models:
        out[name] = float(np.median(times[name])) / num_frames
    return out


def train_for_quality(models, train_videos, steps, batch, train_frames, seed=0):
    rng = np.random.default_rng(seed)
    order = [
        rng.permutation(len(train_videos)) for _ in range(steps * batch // len(train_videos) + 1)
    ]
    order = np.concatenate(order)
    params, losses, seconds = {}, {}, {}
    for name, model in models.items():
        example = jnp.zeros((1, train_frames - 1) + train_videos.shape[2:], jnp.float32)
        p = model.init(jax.random.PRNGKey(seed), example)["params"]
        tx = make_tx(steps)
        step = make_train_step(model, tx)
        opt_state = tx.init(p)
        t0 = time.perf_counter()
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            frames = jnp.asarray(train_videos[idx, :train_frames], jnp.float32) / 255.0
            p, opt_state, loss = step(p, opt_state, frames)
            if (s + 1) % 50 == 0:
                print(f"  {name} step {s + 1}/{steps} loss {float(loss):.4f}", flush=True)
        params[name], losses[name] = p, float(loss)
        seconds[name] = time.perf_counter() - t0
    return params, losses, seconds


def evaluate_quality(models, params, test_videos, context, horizon):
    frames = jnp.asarray(test_videos[:, : context + horizon], jnp.float32) / 255.0
    truth = frames[:, context:]
    out, preds = {}, {}
    for name, model in models.items():
        pred = jax.jit(lambda p, x, m=model: rollout(m, {"params": p}, x, horizon))(
            params[name], frames[:, :context]
        )
        preds[name] = np.asarray(pred)
        out[name] = {
            "mse_per_frame": np.asarray(jnp.mean(fm.mse(pred, truth), 0)).tolist(),
            "ssim_per_frame": np.asarray(jnp.mean(fm.ssim(pred, truth), 0)).tolist(),
            "psnr_per_frame": np.asarray(jnp.mean(fm.psnr(pred, truth), 0)).tolist(),
        }
    return out, np.asarray(truth), preds


def save_rollout_strip(truth, preds, path, num_videos=3, stride=4):
    """Rows per video: truth, ConvS5, ConvLSTM (every `stride`-th generated frame), 2x upscaled."""
    from PIL import Image

    from jaxml.diffusion.image_grid import image_grid

    idx = np.arange(stride - 1, truth.shape[1], stride)
    rows = []
    for i in range(min(num_videos, len(truth))):
        rows += [truth[i, idx], preds["conv_s5"][i, idx], preds["conv_lstm"][i, idx]]
    frames = np.clip(np.round(np.concatenate(rows) * 255), 0, 255).astype(np.uint8)
    grid = image_grid(frames, num_cols=len(idx)).repeat(2, 0).repeat(2, 1)
    Image.fromarray(grid[..., 0]).save(path)


def band_means(per_frame, bands):
    edges = [0, *bands]
    return {f"{a + 1}-{b}": float(np.mean(per_frame[a:b])) for a, b in zip(edges[:-1], edges[1:])}


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    t = result["train_step"]
    for name in ("conv_s5", "conv_lstm"):
        lengths = sorted(int(k) for k in t[name])
        axes[0].loglog(lengths, [t[name][k]["step_s"] for k in lengths], "o-", label=name)
    axes[0].set(
        xlabel="sequence length (frames)", ylabel="train step (s)", title="train step time (median)"
    )
    q = result["quality"]
    context, train_frames = result["config"]["context"], result["config"]["train_frames"]
    for name in ("conv_s5", "conv_lstm"):
        for ax, key in ((axes[1], "mse_per_frame"), (axes[2], "ssim_per_frame")):
            v = q["metrics"][name][key]
            ax.plot(np.arange(1, len(v) + 1) + context, v, label=name)
    for ax, title in ((axes[1], "MSE of rollout"), (axes[2], "SSIM of rollout")):
        ax.axvline(train_frames, color="gray", ls="--", lw=1, label="training length")
        ax.set(xlabel="frame index (context + generated)", title=title)
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--timing_batch", type=int, default=2)
    parser.add_argument("--timing_size", type=int, default=16, help="frame side for timings")
    parser.add_argument("--d_model", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train_steps", type=int, default=100)
    parser.add_argument("--train_batch", type=int, default=8)
    parser.add_argument("--train_frames", type=int, default=12)
    parser.add_argument("--context", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=48)
    parser.add_argument("--eval_videos", type=int, default=32)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default=None, help="JSON path (default results/conv_s5_<backend>)")
    args = parser.parse_args()
    backend = jax.default_backend()
    out = Path(args.out) if args.out else RESULTS / f"conv_s5_{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # 1. Train-step time vs length (latents at 1/2 resolution of timing_size frames).
    models = make_models(args.d_model, downsample=1)
    train_step = time_train_steps(
        models, args.lengths, args.timing_batch, args.timing_size, args.repeats
    )

    # 2. Quality after the same number of steps on moving_digits (32x32, latents 8x8).
    models = make_models(args.d_model, downsample=2)
    train_videos = np.stack(
        [r["video"] for r in data.data_source("moving_digits", "train", args.data_dir)]
    )
    test_source = data.data_source("moving_digits", "test", args.data_dir)
    test_videos = np.stack([test_source[i]["video"] for i in range(args.eval_videos)])
    params, losses, train_seconds = train_for_quality(
        models, train_videos, args.train_steps, args.train_batch, args.train_frames
    )
    metrics, truth, preds = evaluate_quality(
        models, params, test_videos, args.context, args.horizon
    )
    bands = sorted(
        {min(args.train_frames - args.context, args.horizon), args.horizon // 2, args.horizon} - {0}
    )

    # 3. Generation time per frame (after the prefix), batch timing_batch.
    prefix = jnp.asarray(test_videos[: args.timing_batch, : args.context], jnp.float32) / 255.0
    generation = time_generation(models, params, prefix, args.horizon, args.repeats)

    result = {
        "backend": backend,
        "devices": jax.device_count(),
        "config": vars(args) | {"bands": bands},
        "params": {name: num_params(p) for name, p in params.items()},
        "train_step": train_step,
        "train_step_ratio_convlstm_over_convs5": {
            length: train_step["conv_lstm"][length]["step_s"]
            / train_step["conv_s5"][length]["step_s"]
            for length in args.lengths
        },
        "generation_s_per_frame": generation,
        "quality": {
            "final_train_loss": losses,
            "train_seconds": train_seconds,
            "metrics": metrics,
            "bands": {
                name: {
                    k: band_means(metrics[name][k], bands)
                    for k in ("mse_per_frame", "ssim_per_frame", "psnr_per_frame")
                }
                for name in models
            },
        },
        "wall_seconds": time.perf_counter() - t_start,
    }
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    save_rollout_strip(truth, preds, out.parent / f"conv_s5_rollout_{backend}.png")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "params",
                    "train_step_ratio_convlstm_over_convs5",
                    "generation_s_per_frame",
                )
            },
            indent=1,
        )
    )
    print(json.dumps(result["quality"]["bands"], indent=1))
    print(f"wrote {out} in {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
