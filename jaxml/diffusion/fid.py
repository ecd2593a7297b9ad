"""FID tooling on the command line: convert the Inception weights, make reference statistics, score.

  # once, where torch is installed: pytorch-fid's weights -> our .npz (no torch needed after)
  python -m jaxml.diffusion.fid convert --src=pt_inception-2015-12-05-6726825d.pth \
      --out=~/.cache/jaxml/pt_inception-2015-12-05.npz
  # reference statistics of a TFDS split (uint8 images as stored, as EDM's dataset_tool keeps them)
  python -m jaxml.diffusion.fid stats --dataset=cifar10 --split=train --out=cifar10_train.npz
  # FID (and KID when the statistics file has features) of samples written by train.sample
  python -m jaxml.diffusion.fid score --samples=runs/x/sample_200000_heun/samples.npz \
      --ref=cifar10_train.npz

Bad input (missing file, wrong arrays, unknown dataset) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("jaxml.diffusion.fid")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jaxml.diffusion.fid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="pytorch-fid Inception weights -> our .npz")
    convert.add_argument("--src", required=True, help=".pth state dict, pickled module, or .npz")
    convert.add_argument("--out", required=True, help="the .npz to write")

    stats = sub.add_parser("stats", help="mean/covariance of Inception features of a TFDS split")
    stats.add_argument("--dataset", required=True, help="TFDS name (e.g. cifar10) or embedded")
    stats.add_argument("--split", default="train")
    stats.add_argument("--data_dir", default=None, help="TFDS data dir (default: the project's)")
    stats.add_argument("--out", required=True, help="the .npz to write (mu, sigma, num_images)")
    stats.add_argument("--weights", default=None, help="converted Inception .npz")
    stats.add_argument("--batch_size", type=int, default=100)
    stats.add_argument("--max_images", type=int, default=None, help="use the first N images")
    stats.add_argument(
        "--save_features", action="store_true", help="also store the features (for KID)"
    )

    score = sub.add_parser("score", help="FID (and KID) of a samples .npz against statistics")
    score.add_argument("--samples", required=True, help=".npz with 'images' (train.sample's)")
    score.add_argument("--ref", required=True, help="statistics .npz written by `stats`")
    score.add_argument("--weights", default=None, help="converted Inception .npz")
    score.add_argument("--batch_size", type=int, default=100)
    return parser


def _load_split_images(dataset: str, split: str, data_dir, max_images) -> np.ndarray:
    from jaxml.data import data_source

    source = data_source(dataset, split, data_dir)
    n = len(source) if max_images is None else min(max_images, len(source))
    images = np.stack([np.asarray(source[i]["image"]) for i in range(n)])
    if images.dtype != np.uint8:
        raise ValueError(f"{dataset}/{split} images are {images.dtype}; FID stats want uint8")
    return images


def _convert(args) -> dict:
    from jaxml.diffusion.metrics import inception_fid as fid

    summary = fid.convert_inception_weights(args.src, args.out)
    return {"out": args.out, **summary}


def _stats(args) -> dict:
    from jaxml.diffusion.metrics import feature_statistics, features_in_batches
    from jaxml.diffusion.metrics import inception_fid as fid

    if args.batch_size <= 0:
        raise ValueError(f"--batch_size must be positive, got {args.batch_size}")
    features_fn = fid.inception_feature_extractor(args.weights)  # checks the weights first
    images = _load_split_images(args.dataset, args.split, args.data_dir, args.max_images)
    log.info("Inception features of %d %s/%s images", len(images), args.dataset, args.split)
    features = features_in_batches(
        features_fn, images, args.batch_size, progress=f"{args.dataset}/{args.split}"
    )
    mu, sigma = feature_statistics(features)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(mu=mu, sigma=sigma, num_images=len(features))
    if args.save_features:
        arrays["features"] = features.astype(np.float32)
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    return {"out": str(out), "num_images": len(features)}


def _score(args) -> dict:
    from jaxml.diffusion.metrics import features_in_batches, frechet, quantize_uint8
    from jaxml.diffusion.metrics import inception_fid as fid

    ref = Path(args.ref)
    mu_ref, sigma_ref = fid.load_reference_stats(ref)
    samples = Path(args.samples)
    if not samples.is_file():
        raise FileNotFoundError(f"samples file not found: {samples}")
    with np.load(samples) as data:
        if "images" not in data.files:
            raise ValueError(f"{samples} has arrays {data.files}; want 'images'")
        images = quantize_uint8(data["images"])
    features_fn = fid.inception_feature_extractor(args.weights)
    features = features_in_batches(features_fn, images, args.batch_size, progress="samples")
    result = {
        "num_samples": len(features),
        "fid": frechet.frechet_distance(*frechet.feature_statistics(features), mu_ref, sigma_ref),
    }
    with np.load(ref) as data:
        if "features" in data.files:
            result.update(frechet.kid(features, data["features"]))
    return result


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = _parser().parse_args(argv)
    from jaxml.data.sources import DatasetUnavailableError
    from jaxml.diffusion.metrics.inception_fid import InceptionWeightsError

    command = {"convert": _convert, "stats": _stats, "score": _score}[args.command]
    try:
        result = command(args)
    except (FileNotFoundError, InceptionWeightsError, DatasetUnavailableError, ValueError) as e:
        print(f"python -m jaxml.diffusion.fid {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
