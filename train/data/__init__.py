"""Streaming training data: built shards + a captioner's sidecars -> CLIP-ViP batches.

    from train.data import TrainDataConfig, make_train_loader, Batch
    loader = make_train_loader(cfg, processor_dir="ckpt/", rank=0, world_size=8, seed=0, start_batch=0)

See loader.py for the pipeline, stream.py for sharding and exact resume.
"""

from train.data.batch import Batch
from train.data.config import TrainDataConfig
from train.data.loader import TrainLoader, make_train_loader

__all__ = ["Batch", "TrainDataConfig", "TrainLoader", "make_train_loader"]
