"""Builder of Web CapFilt (14M synthetic captions) streamed from webdataset shards.

A builder of its own because 14M images are never listed in an annotation file: its
`build_info.annotations.train` names shard patterns (or urls to stream), not files to read."""
from __future__ import annotations

import os
from typing import Any

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder, _as_list
from lavis_ib.datasets.datasets.webdataset_caption import (WebCaptionDataset, expand_shards,
                                                             refuse_pipes)


@registry.register_builder("capfilt14m")
class CapFilt14MBuilder(BaseDatasetBuilder):
    """Web CapFilt, webdataset tar shards: members ``<key>.jpg|png`` + ``<key>.txt`` or
    ``<key>.json`` ({"caption"}). `build_info.annotations.train.storage`: brace pattern(s)
    of local shards; with ``download: true`` and no local shards the `url` pattern is
    streamed instead. `num_samples`: samples per pass (mixing weight); `shuffle_shards`,
    `shuffle_buffer`: seeded shuffling (see `WebCaptionDataset`); `allow_pipe: true` accepts
    ``pipe:`` urls (they run a shell command); `image_ids: true` adds ``image_id``. Split: train."""

    train_dataset_cls = WebCaptionDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/capfilt14m/defaults.yaml"}
    DATA_SOURCE = ("BLIP's CapFilt captions (https://github.com/salesforce/BLIP, ccs_synthetic_filtered_large) "
                   "packed into webdataset shards, e.g. with img2dataset --output_format webdataset")

    def _shards(self) -> list[str]:
        """The shard urls to stream: local storage, else (download: true) the `url`s.
        ``pipe:`` urls (a shell command) pass through only with ``allow_pipe: true``."""
        splits = self.splits()
        if splits != ["train"]:
            raise ConfigError(f"capfilt14m has only a train split; remove {sorted(set(splits) - {'train'})} "
                              f"from build_info.annotations.")
        node = self.config.build_info.annotations.train
        allow_pipe = bool(self.config.get("allow_pipe", False))
        patterns = [str(p) for p in _as_list(node.get("storage"))]
        refuse_pipes(patterns + [str(u) for u in _as_list(node.get("url"))], allow_pipe)
        shards = expand_shards([p if p.startswith("pipe:") else self.resolve_path(p) for p in patterns])
        missing = [s for s in shards if not s.startswith("pipe:") and not os.path.exists(s)]
        if missing and self.config.get("download", False) and node.get("url"):
            shards = expand_shards(_as_list(node.get("url")))  # webdataset streams http(s) urls
        else:
            for shard in missing[:1]:
                self.require(shard, f"shard (build_info.annotations.train.storage; {len(missing)} missing)")
        if not shards:
            raise ConfigError("capfilt14m: build_info.annotations.train.storage names no shard.")
        return shards

    def check_files(self) -> list[str]:
        return self._collect(self._shards)

    def build(self) -> dict[str, Any]:
        shards = self._shards()
        self._check_processors(WebCaptionDataset, "train", "train")
        return {"train": WebCaptionDataset(vis_processor=self.vis_processors.get("train"),
                                           text_processor=self.text_processors.get("train"),
                                           ann_paths=shards, num_samples=self.config.get("num_samples"),
                                           shuffle_shards=bool(self.config.get("shuffle_shards", False)),
                                           shuffle_buffer=int(self.config.get("shuffle_buffer", 0)),
                                           allow_pipe=bool(self.config.get("allow_pipe", False)),
                                           image_ids=bool(self.config.get("image_ids", False)))}
