"""The generator and its checkpoint loader against NVIDIA's code and the reference key list."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from conftest import REFERENCE, SMALL_LOCAL, rng_input

from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.model import network as nw


def reference_keys():
    rows = [line.rstrip("\n").split("\t") for line in open(REFERENCE / "upstream_state_dict_keys.txt")
            if line.strip() and not line.startswith("#")]
    return [(k, tuple(int(d) for d in shape.split("x"))) for k, shape, _dtype in rows]


def upstream_generator(networks, cfg: nw.GeneratorConfig, seed: int):
    torch.manual_seed(seed)
    net = networks.define_G(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.netG, cfg.n_downsample_global,
                            cfg.n_blocks_global, cfg.n_local_enhancers, cfg.n_blocks_local, "instance")
    return net.eval()


def test_state_dict_keys_match_reference_file():
    if not (REFERENCE / "upstream_state_dict_keys.txt").is_file():
        pytest.skip(f"no reference key list at {REFERENCE}")
    ours = nw.build_generator(nw.LABEL2CITY_1024P).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == reference_keys()
    assert sum(v.numel() for v in ours.values()) == 182_857_059


@pytest.mark.parametrize("cfg", [nw.LABEL2CITY_1024P, nw.LABEL2CITY_512P], ids=["label2city_1024p", "global_512p"])
def test_parity_with_upstream(upstream_networks, cfg, tmp_path):
    """Upstream's generator with seeded weights, saved as upstream saves it, loads into ours: same output."""
    ref = upstream_generator(upstream_networks, cfg, seed=3)
    path = tmp_path / "latest_net_G.pth"
    torch.save(ref.cpu().state_dict(), path)  # upstream base_model.save_network
    loaded = nw.load_generator(tmp_path)  # a folder, as the seed's --load_pretrain
    assert loaded.config == cfg
    x = torch.from_numpy(rng_input((1, 36, 64, 128), seed=4))
    with torch.inference_mode():
        want = ref(x)
        got = loaded.model(x)
    assert got.shape == (1, 3, 64, 128)
    assert (got - want).abs().max().item() <= 1e-5


def test_small_local_parity(upstream_networks):
    ref = upstream_generator(upstream_networks, SMALL_LOCAL, seed=5)
    ours = nw.build_generator(SMALL_LOCAL)
    nw.load_state_dict_strict(ours, ref.state_dict())
    x = torch.from_numpy(rng_input((2, 36, 32, 64), seed=6))
    with torch.inference_mode():
        assert (ours.eval()(x) - ref(x)).abs().max().item() <= 1e-6


@pytest.mark.parametrize("cfg", [
    SMALL_LOCAL,
    nw.GeneratorConfig(input_nc=35, output_nc=3, ngf=16, netG="global", n_downsample_global=3, n_blocks_global=2,
                       n_local_enhancers=0, n_blocks_local=0),
    nw.GeneratorConfig(input_nc=36, output_nc=3, ngf=4, netG="local", n_downsample_global=2, n_blocks_global=1,
                       n_local_enhancers=2, n_blocks_local=2),
])
def test_architecture_is_read_from_the_shapes(cfg):
    assert nw.infer_config(nw.build_generator(cfg).state_dict()) == cfg


def test_filter_strips_prefixes_and_legacy_instance_norm_stats():
    sd = nw.build_generator(SMALL_LOCAL).state_dict()
    foreign = {f"module.netG.{k}": v for k, v in sd.items()}
    foreign["module.netG.model.2.running_mean"] = torch.zeros(32)   # torch < 0.4 InstanceNorm stats
    foreign["module.netG.model.2.running_var"] = torch.ones(32)
    foreign["module.netG.model1_2.0.conv_block.2.running_mean"] = torch.zeros(16)
    filtered = nw.checkpoint_filter_fn(foreign)
    assert list(filtered) == list(sd)
    assert "module.netG.model.2.running_mean" in foreign  # pure: the input is untouched


def test_prefixed_legacy_checkpoint_loads(tmp_path):
    model = nw.random_generator(SMALL_LOCAL, seed=2)
    sd = {f"netG.{k}": v for k, v in model.state_dict().items()}
    sd["netG.model1_1.2.running_mean"] = torch.zeros(8)
    torch.save(sd, tmp_path / "g.pth")
    loaded = nw.load_generator(tmp_path / "g.pth")
    x = torch.from_numpy(rng_input((1, 36, 32, 64)))
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), model(x))


def test_wrong_ngf_is_an_error_not_garbage(tmp_path):
    nw.save_checkpoint(nw.random_generator(SMALL_LOCAL), tmp_path / "latest_net_G.pth")
    with pytest.raises(UserError, match="ngf=16 given, file has 8"):
        nw.load_generator(tmp_path, expect=nw.GeneratorConfig(**{**SMALL_LOCAL.to_dict(), "ngf": 16}))


def test_foreign_network_lists_what_does_not_fit(tmp_path):
    sd = nw.build_generator(SMALL_LOCAL).state_dict()
    sd["model.1.weight"] = torch.zeros(16, 36, 5, 5)  # a 5x5 stem: not pix2pixHD
    sd["extra.head.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(UserError) as err:
        nw.load_generator(tmp_path / "x.pth")
    msg = str(err.value)
    assert "x.pth" in msg and "wrong shape" in msg and "model.1.weight" in msg and "extra.head.weight" in msg


def test_not_a_generator_at_all(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "resnet.pth")
    with pytest.raises(UserError, match="not a pix2pixHD generator"):
        nw.load_generator(tmp_path / "resnet.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(UserError, match="holds a list, not a state dict"):
        nw.load_generator(tmp_path / "list.pth")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "latest_net_G.pth"
    torch.save({"model.1.weight": _Evil(marker)}, path, pickle_protocol=2)
    with pytest.raises(UserError, match="refused to load"):
        nw.load_generator(path)
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as fh:
        pickle.dump(_Evil(marker), fh)
    with pytest.raises(UserError):
        nw.load_generator(tmp_path / "plain.pkl")
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path):
    path = nw.save_checkpoint(nw.random_generator(SMALL_LOCAL), tmp_path / "latest_net_G.pth")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or not a torch file"):
        nw.load_generator(path)


def test_folder_without_checkpoint(tmp_path):
    with pytest.raises(UserError, match="has no latest_net_G.pth"):
        nw.load_generator(tmp_path)


def test_an_old_torch_refuses_to_unpickle_checkpoints(tmp_path, monkeypatch):
    """weights_only=True had a bypass before torch 2.6 (CVE-2025-32434): an older torch loads nothing."""
    import torch

    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.model import network

    ckpt = network.save_checkpoint(network.random_generator(SMALL_LOCAL), tmp_path / "latest_net_G.pth")
    network.check_safe_torch(version="2.6.0+cpu")
    network.check_safe_torch(version="2.10.1")
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu121")
    with pytest.raises(UserError, match=r"torch 2.5.1\+cu121 is too old to load a checkpoint safely.*torch>=2.6"):
        network.read_state_dict(ckpt)
