"""Backbone pretraining on synthetic scenes: labels, determinism, a loadable torchvision checkpoint."""
import numpy as np
import pytest
import torch
import torchvision

from m4i.data import synthetic
from m4i.io import M4IError, save_torch
from m4i.models.features import build_backbone, torchvision_net
from m4i.models.pretrain import COLOURS, check_pretrain, pretrain_backbone, scene_targets

SPEC = {"backbone": "resnet18", "weights": "none", "layers": ["layer2"], "grid": 3, "input_size": 32}
CFG = {"n_images": 60, "image_size": 24, "epochs": 3, "batch_size": 16, "lr": 0.002, "seed": 3}


@pytest.fixture(scope="module")
def pretrained():
    torch.set_num_threads(1)
    return pretrain_backbone(SPEC, CFG)


def test_scene_targets_put_each_object_in_its_cell():
    scene, _ = next(synthetic.scene_images(1, 24, "doodles", 5))
    colour, shape, background = scene_targets(scene)
    occupied = {o["row"] * synthetic.GRID + o["col"]: o for o in scene["objects"]}
    for cell in range(synthetic.GRID ** 2):
        if cell in occupied:
            assert COLOURS[colour[cell] - 1] == occupied[cell]["colour"]
            assert synthetic.SHAPES[shape[cell] - 1] == occupied[cell]["shape"]
        else:
            assert colour[cell] == 0 and shape[cell] == 0
    assert background >= 0


def test_scene_images_are_the_generated_dataset_images(tmp_path):
    from PIL import Image

    records = synthetic.generate(tmp_path, 3, 24, "shapes", 9, "d")
    for record, (scene, pixels) in zip(records, synthetic.scene_images(3, 24, "shapes", 9)):
        assert scene == record["attributes"]
        assert np.array_equal(np.asarray(Image.open(tmp_path / record["image"])), pixels)


def test_pretraining_trains_the_tapped_trunk_and_only_it(pretrained):
    state, history = pretrained
    init = torchvision_net(SPEC, CFG["seed"]).state_dict()
    assert set(state) == set(init)  # the whole torchvision model: `weights` can name it
    assert not torch.equal(state["layer2.0.conv1.weight"], init["layer2.0.conv1.weight"])
    assert torch.equal(state["layer4.0.conv1.weight"], init["layer4.0.conv1.weight"])  # past the tap
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    for col in ("val_colour_acc", "val_shape_acc", "val_background_acc"):
        assert history[col].between(0, 1).all()


def test_pretraining_is_deterministic_and_seeded(pretrained):
    state, _ = pretrained
    again, _ = pretrain_backbone(SPEC, CFG)
    other, _ = pretrain_backbone(SPEC, dict(CFG, seed=4, epochs=1))
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert not torch.equal(state["conv1.weight"], other["conv1.weight"])


def test_pretrained_checkpoint_loads_as_backbone_weights(pretrained, tmp_path):
    state, _ = pretrained
    path = tmp_path / "backbone.pt"
    save_torch(state, path)
    net = build_backbone(dict(SPEC, weights=str(path)), seed=0)
    assert torch.equal(net.stages["layer2"][0].conv1.weight, state["layer2.0.conv1.weight"])
    torchvision.models.resnet18(weights=None).load_state_dict(torch.load(path, weights_only=True))


@pytest.mark.parametrize("bad, key", [({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"),
                                       ({"n_images": 5}, "n_images"), ({"extra": 1}, "extra")])
def test_bad_pretrain_settings_name_the_key(bad, key):
    with pytest.raises(M4IError, match=key):
        check_pretrain(dict(CFG, **bad))
