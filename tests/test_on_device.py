"""``data.on_device``: batches formed on the device equal the loader's, in the same order."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from tagger.data.device import DeviceBatches, to_device
from tagger.data.sampler import EpochShuffleSampler
from tagger.data.synthetic import SyntheticDataModule
from tagger.train import train

LOADER_ARGS = {
    "train_clips": 23, "val_clips": 7, "test_clips": 0, "n_subclips": 2, "subclip_len": 4096,
    "sample_rate": 12000, "batch_size": 5, "shuffle_seed": 3,
}  # fmt: skip


def epoch_batches(datamodule: SyntheticDataModule, epoch: int) -> list[dict[str, torch.Tensor]]:
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(epoch)  # as Lightning does before every epoch
    return list(loader)


@pytest.mark.parametrize("epoch", [0, 1])
def test_same_batches_in_the_same_order_as_the_loader(epoch: int) -> None:
    host = SyntheticDataModule(**LOADER_ARGS)
    device = SyntheticDataModule(**LOADER_ARGS, on_device=True)
    host.setup(), device.setup()
    expected, got = epoch_batches(host, epoch), epoch_batches(device, epoch)
    assert [len(b["index"]) for b in got] == [5, 5, 5, 5, 3]
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(b["index"], a["index"])
        assert b["audio"].dtype == a["audio"].dtype == torch.int16  # as stored, both ways
        assert torch.equal(b["audio"], a["audio"])
        torch.testing.assert_close(b["labels"], a["labels"])
    first_of_next = epoch_batches(device, epoch + 1)[0]["index"]
    assert not torch.equal(first_of_next, got[0]["index"])  # a new permutation each epoch


def test_evaluation_batches_are_in_file_order() -> None:
    device = SyntheticDataModule(**LOADER_ARGS, on_device=True)
    batches = list(device.loader("val"))
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(7))


@pytest.mark.slow  # two 2-epoch trainings each
@pytest.mark.parametrize(
    "windows", [[], ["+data.random_windows=true", "+data.train_subclips=1"]],
    ids=["consecutive", "random_windows"],
)  # fmt: skip
def test_training_on_device_gives_the_loader_run_s_metrics(train_config, windows) -> None:
    on_host = train(train_config("trainer.max_epochs=2", *windows, run="host"))
    on_device = train(
        train_config("trainer.max_epochs=2", "data.on_device=true", *windows, run="device")
    )
    for key in ("train/loss", "train/auc", "val/auc", "val/loss"):
        assert on_device["final"][key] == on_host["final"][key], key
    assert on_device["test"]["auc"] == on_host["test"]["auc"]


@pytest.mark.parametrize("epoch", [0, 1])
def test_random_windows_on_device_are_the_loader_s(epoch: int) -> None:
    args = {**LOADER_ARGS, "random_windows": True, "train_subclips": 3}
    host = SyntheticDataModule(**args)
    device = SyntheticDataModule(**args, on_device=True)
    host.setup(), device.setup()
    expected, got = epoch_batches(host, epoch), epoch_batches(device, epoch)
    assert len(got) == 5 and got[0]["audio"].shape == (5, 3, 1, 4096)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(b["index"], a["index"])
        assert b["audio"].dtype == a["audio"].dtype and torch.equal(b["audio"], a["audio"])
    clip = got[0]["index"][0].item()
    other_epoch = next(b for b in epoch_batches(device, epoch + 1) if clip in b["index"].tolist())
    row = other_epoch["index"].tolist().index(clip)
    assert not torch.equal(other_epoch["audio"][row], got[0]["audio"][0])  # new windows


@pytest.mark.parametrize("shuffled", [False, True])
def test_ddp_shards_are_those_of_distributed_sampler(shuffled: bool) -> None:
    device = SyntheticDataModule(**LOADER_ARGS, on_device=True)
    device.setup()
    split = to_device(device.splits["val"], torch.device("cpu"))
    sampler = EpochShuffleSampler(len(split), seed=5) if shuffled else None
    order = list(sampler) if shuffled else list(range(len(split)))  # 7 clips: one pad
    for rank in (0, 1):
        batches = DeviceBatches(split, 4096, 2, sampler, rank=rank, world_size=2)
        shard = list(DistributedSampler(order, num_replicas=2, rank=rank, shuffle=False))
        expected = [order[i] for i in shard]
        assert len(batches) == 2 and batches.order().tolist() == expected
        got = torch.cat([batch["index"] for batch in batches])
        assert got.tolist() == expected


def test_a_resumed_epoch_goes_on_from_where_it_stopped() -> None:
    device = SyntheticDataModule(**LOADER_ARGS, on_device=True)
    device.setup()
    split = to_device(device.splits["train"], torch.device("cpu"))
    sampler = EpochShuffleSampler(len(split), seed=5)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.resume(epoch=3, position=10)  # two batches of 5 done before the interruption
    batches = DeviceBatches(split, 4096, 5, sampler)
    assert torch.cat([batch["index"] for batch in batches]).tolist() == whole[10:]
