"""Datasets on the training device, batched augmentation and block plans. May import: errors, progress, config,
files."""
from fullbatch.data.blocks import block_length, block_plan, example_order
from fullbatch.data.cifar import load_cifar
from fullbatch.data.device_dataset import DeviceDataset, load_device_dataset
from fullbatch.errors import DatasetUnavailable

__all__ = ["DatasetUnavailable", "DeviceDataset", "block_length", "block_plan", "example_order", "load_cifar",
           "load_device_dataset"]
