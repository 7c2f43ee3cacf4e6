"""The EMA of the weights (detector/training/ema.py): the rule by hand, validation, settings, checkpoints read with it off.

Resume and checkpoints: tests/reliability/test_ema_resume.py.
"""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from detector.model import RetinaNetConfig
from detector.training.ema import RAW_WEIGHTS_KEY, WarmupEMA
from detector.training.module import RetinaNetModule

DECAY, TAU, STEPS, VAL_AT = 0.8, 2.0, 5, 3


class Toy(L.LightningModule):
    """A linear layer and a BatchNorm (a float buffer to average and an integer one), plain SGD."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        self.seen_in_validation = []

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.seen_in_validation.append(self.net[0].weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class RecordWeights(L.Callback):
    """The raw weights (parameters and buffers) after every optimizer step, and before each batch."""

    def __init__(self) -> None:
        self.after_step, self.before_batch = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before_batch.append(pl_module.net[0].weight.detach().clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after_step.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _hand_ema(states: list[dict]) -> dict:
    """ema_1 = w_1; ema_k = d_k ema_(k-1) + (1 - d_k) w_k with d_k = DECAY (1 - exp(-(k-1)/TAU)), float64."""
    ema = {k: v.double() for k, v in states[0].items() if v.is_floating_point()}
    for k_step, state in enumerate(states[1:], start=2):
        d = DECAY * (1 - math.exp(-(k_step - 1) / TAU))
        ema = {k: d * ema[k] + (1 - d) * state[k].double() for k in ema}
    return ema


def test_the_average_is_the_warmed_up_ema_by_hand_and_validation_sees_it():
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(4 * STEPS, 3))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    model, record = Toy(), RecordWeights()
    trainer = L.Trainer(max_steps=STEPS, callbacks=[WarmupEMA(DECAY, TAU), record], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        val_check_interval=VAL_AT, limit_val_batches=1, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(model, loader, loader)

    assert len(record.after_step) == STEPS
    expected = _hand_ema(record.after_step)
    final = model.state_dict()  # after fit the model holds the average
    assert expected.keys() == {"net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias", "net.1.running_mean",
                               "net.1.running_var"}
    for k, v in expected.items():
        torch.testing.assert_close(final[k].double(), v, rtol=1e-6, atol=1e-7, msg=k)
    for k in ("net.0.weight", "net.1.running_mean"):  # not the raw weights (the bias before BatchNorm never moves)
        assert not torch.allclose(final[k], record.after_step[-1][k]), k
    assert int(final["net.1.num_batches_tracked"]) == STEPS  # a counter: the current value, not an average
    # the validation after step 3 ran on the average of steps 1..3, and training went on from the raw weights
    at_val = _hand_ema(record.after_step[:VAL_AT])["net.0.weight"]
    torch.testing.assert_close(model.seen_in_validation[0].double(), at_val, rtol=1e-6, atol=1e-7)
    assert torch.equal(record.before_batch[VAL_AT], record.after_step[VAL_AT - 1]["net.0.weight"])


def test_bad_settings_are_one_line_errors_naming_the_key():
    config = RetinaNetConfig(num_classes=None)
    with pytest.raises(ValueError, match="model.ema_decay"):
        RetinaNetModule(config, ema_decay=1.0)
    with pytest.raises(ValueError, match="model.ema_tau"):
        RetinaNetModule(config, ema_decay=0.9, ema_tau=0)


@pytest.mark.parametrize("stage, weights", [(TrainerFn.FITTING, "raw"), (TrainerFn.VALIDATING, "average")])
def test_an_ema_checkpoint_read_with_the_average_off(stage, weights):
    """Training on from one goes on from its raw weights; validating one uses the average it saved."""
    module = RetinaNetModule(RetinaNetConfig(num_classes=2, backbone="resnet18", fpn_channels=16, head_convs=1))
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.state.fn = stage
    module.trainer = trainer
    checkpoint = {"state_dict": {"w": torch.zeros(1)}, RAW_WEIGHTS_KEY: {"w": torch.ones(1)}}
    module.on_load_checkpoint(checkpoint)
    assert float(checkpoint["state_dict"]["w"]) == (1.0 if weights == "raw" else 0.0)
