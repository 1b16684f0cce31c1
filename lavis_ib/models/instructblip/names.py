"""InstructBLIP's parameter-name maps: those of every Q-Former model, kept in
`lavis_ib.models.components.names` (BLIP-2 shares them); re-exported here, where the
checkpoint guide and the LAVIS-file example name them."""
from lavis_ib.models.components.names import (fuse_qkv_bias, hf_state_to_ours, ours_to_hf_state,
                                              qformer_to_bert, to_hf, to_lavis, vision_to_hf)

__all__ = ["fuse_qkv_bias", "hf_state_to_ours", "ours_to_hf_state", "qformer_to_bert", "to_hf",
           "to_lavis", "vision_to_hf"]
