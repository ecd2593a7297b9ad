"""FID as the field computes it: our Inception against pytorch-fid's own module, the CLI, uint8.

The cross-check needs pytorch-fid and torch (the `[fidcheck]` extra) and is
slow (one Inception compile): it builds pytorch-fid's InceptionV3 with random
weights (its weight download is replaced by a state dict made here), saves
the state dict as a .pth, converts it with our `convert`, and compares pool3
features on the same images.
"""

import json

import numpy as np
import pytest

from jaxml.diffusion import fid as fid_cli
from jaxml.diffusion import metrics

_OUR_LEAF = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _random_torch_layout_state_dict(seed=0):
    """{torch name: array} for every array pytorch-fid's FID Inception has, random values."""
    rng = np.random.default_rng(seed)
    shapes = metrics.inception_param_shapes()
    arrays = {}
    for key in metrics.inception_torch_keys():
        module, kind, name = key.rsplit(".", 2)  # e.g. "Mixed_6b.branch7x7_2", "conv", "weight"
        if kind == "conv":
            kh, kw, cin, cout = shapes[(*module.split("."), "conv", "kernel")].shape
            value = rng.standard_normal((cout, cin, kh, kw)) * np.sqrt(2.0 / (cin * kh * kw))
        else:
            (c,) = shapes[(*module.split("."), "bn", _OUR_LEAF[name])].shape
            if name in ("weight", "running_var"):
                value = rng.uniform(0.5, 1.5, c)
            else:
                value = 0.1 * rng.standard_normal(c)
        arrays[key] = value.astype(np.float32)
    return arrays


@pytest.mark.slow
def test_pool3_features_match_pytorch_fid(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")

    arrays = _random_torch_layout_state_dict()
    state_dict = {k: torch.from_numpy(v) for k, v in arrays.items()}
    # What pytorch-fid's real file also holds; its strict load_state_dict needs them.
    for key in list(arrays):
        if key.endswith("bn.running_var"):
            state_dict[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    state_dict["fc.weight"] = torch.zeros(1008, 2048)
    state_dict["fc.bias"] = torch.zeros(1008)
    # No download: pytorch-fid's fid_inception_v3 loads this dict (strictly: names and shapes
    # of our network must be exactly those of its module, or this raises).
    monkeypatch.setattr(
        pytorch_fid_inception, "load_state_dict_from_url", lambda *a, **k: state_dict
    )
    block = pytorch_fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]
    theirs_model = pytorch_fid_inception.InceptionV3([block]).eval()

    pth = tmp_path / "pt_inception-2015-12-05-random.pth"
    torch.save(state_dict, pth)
    npz = tmp_path / "inception.npz"
    assert fid_cli.main(["convert", f"--src={pth}", f"--out={npz}"]) == 0

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)  # CIFAR-sized
    images[2] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None]  # smooth ramp
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # pytorch-fid's input
        theirs = theirs_model(x)[0][:, :, 0, 0].numpy().astype(np.float64)
    ours = np.asarray(metrics.inception_feature_extractor(npz)(images), np.float64)
    assert ours.shape == theirs.shape == (4, 2048)
    scale = np.abs(theirs).max()
    assert scale > 0 and np.all(np.isfinite(theirs))
    rel = np.abs(ours - theirs).max() / scale
    print(f"pool3 max relative difference to pytorch-fid: {rel:.2e}")
    assert rel < 1e-4, rel


def test_convert_from_npz_state_dict_and_cli_errors(tmp_path, capsys):
    arrays = _random_torch_layout_state_dict(seed=2)
    arrays["fc.weight"] = np.zeros((1008, 2048), np.float32)  # ignored, reported
    src = tmp_path / "state_dict.npz"
    np.savez(src, **arrays)
    out = tmp_path / "out" / "inception.npz"
    assert fid_cli.main(["convert", f"--src={src}", f"--out={out}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["arrays"] == 470 and summary["ignored"] == ["fc.weight"]
    loaded = metrics.load_inception_params(out)
    # OIHW in the state dict -> HWIO in our params.
    np.testing.assert_array_equal(
        loaded["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
        arrays["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        loaded["Mixed_5b"]["branch_pool"]["bn"]["var"],
        arrays["Mixed_5b.branch_pool.bn.running_var"],
    )

    del arrays["Mixed_7c.branch_pool.conv.weight"]
    np.savez(src, **arrays)
    assert fid_cli.main(["convert", f"--src={src}", f"--out={tmp_path / 'x.npz'}"]) == 2
    err = capsys.readouterr().err
    assert "Mixed_7c.branch_pool.conv.weight" in err and "missing" in err
    assert not (tmp_path / "x.npz").exists()
    assert fid_cli.main(["convert", "--src=/nonexistent.pth", f"--out={out}"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_stats_rejects_missing_weights_before_reading_data(tmp_path, capsys):
    out = tmp_path / "s.npz"
    args = ["stats", "--dataset=cifar10", f"--out={out}", f"--weights={tmp_path / 'none.npz'}"]
    assert fid_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "never downloads" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_quantize_uint8_is_edm_rounding():
    x = np.array([-1.0, -0.999, 0.0, 0.5, 0.9999, 1.0, 1.5, -3.0], np.float32)
    # EDM: (x * 127.5 + 128).clip(0, 255).to(uint8); a NumPy loop of the same.
    expected = [min(max(int(np.floor(v * 127.5 + 128)), 0), 255) for v in x]
    np.testing.assert_array_equal(metrics.quantize_uint8(x), expected)
    u8 = np.arange(256, dtype=np.uint8)
    assert metrics.quantize_uint8(u8) is u8
    # A uint8 image survives the float round trip of preprocess -> quantise exactly.
    np.testing.assert_array_equal(metrics.quantize_uint8(u8.astype(np.float32) / 127.5 - 1.0), u8)
