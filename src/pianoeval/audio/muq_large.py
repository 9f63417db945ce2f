"""The released MuQ-large configuration (`OpenMuQ/MuQ-large-msd-iter`), written down with its source.

The hub's `config.json` could not be read here (no hub access), so the values come from the code that
wrote it, in the MuQ repository (github.com/tencent-ailab/MuQ, `src/recipes/pretrain/`, read in the
copy vendored at multimodal-art-projection/AutoMV commit 582408c, `picture_generate/SongFormer/src/
third_party/MuQ/`):

- `scripts/convert_muq_fairseq_ckpt_to_huggingface.py` makes the released folder: `model.muq.save_pretrained`
  (huggingface_hub's PyTorchModelHubMixin: `model.safetensors`) and then overwrites `config.json` with the
  fairseq model config, `OmegaConf.to_container(cfg["model"])` minus `_name`;
- that config is `config/pretrain/MuQ_large_iter_multinodes_v100.yaml` (the "iter" run, as in the hub
  name), section `model:` (codebook, mel, conv, encoder sizes, `use_rvq_target: true`, `stat`, the full
  `w2v2_config`), completed by the dataclass defaults of `models/muq_fairseq.py` (`MuQFairseqConfig`:
  `use_vq_target`, `use_encodec_target`, `recon_loss_ratio`, `resume_checkpoint`, `rvq_n_codebooks`,
  `rvq_multi_layer_num`).

The sizes agree with the installed `muq` package's `MuQConfig` defaults (encoder_dim 1024, encoder_depth
12, conv_dim 512, n_mels 128, hop_length 240) and with the README (about 300M parameters). The conformer
reads `w2v2_config` with `num_hidden_layers` and `hidden_size` replaced by `encoder_depth` and
`encoder_dim` (muq's MuQModel), so its `num_hidden_layers: 24` is not the depth.
"""

from __future__ import annotations

import copy
from typing import Any

# The `w2v2_config` of MuQ_large_iter_multinodes_v100.yaml (transformers' Wav2Vec2ConformerConfig fields).
_W2V2_CONFIG: dict[str, Any] = {
    "activation_dropout": 0.1,
    "adapter_kernel_size": 3,
    "adapter_stride": 2,
    "add_adapter": False,
    "apply_spec_augment": True,
    "architectures": ["Wav2Vec2ConformerForCTC"],
    "attention_dropout": 0.1,
    "bos_token_id": 1,
    "classifier_proj_size": 256,
    "codevector_dim": 768,
    "conformer_conv_dropout": 0.1,
    "contrastive_logits_temperature": 0.1,
    "conv_bias": True,
    "conv_depthwise_kernel_size": 31,
    "conv_dim": [512, 512, 512, 512, 512, 512, 512],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "ctc_loss_reduction": "sum",
    "ctc_zero_infinity": False,
    "diversity_loss_weight": 0.1,
    "do_stable_layer_norm": True,
    "eos_token_id": 2,
    "feat_extract_activation": "gelu",
    "feat_extract_dropout": 0.0,
    "feat_extract_norm": "layer",
    "feat_proj_dropout": 0.1,
    "feat_quantizer_dropout": 0.0,
    "final_dropout": 0.1,
    "gradient_checkpointing": False,
    "hidden_act": "swish",
    "hidden_dropout": 0.1,
    "hidden_dropout_prob": 0.1,
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-5,
    "layerdrop": 0.0,
    "mask_feature_length": 10,
    "mask_feature_min_masks": 0,
    "mask_feature_prob": 0.0,
    "mask_time_length": 10,
    "mask_time_min_masks": 2,
    "mask_time_prob": 0.05,
    "max_source_positions": 5000,
    "model_type": "wav2vec2-conformer",
    "num_adapter_layers": 3,
    "num_attention_heads": 16,
    "num_codevector_groups": 2,
    "num_codevectors_per_group": 320,
    "num_conv_pos_embedding_groups": 16,
    "num_conv_pos_embeddings": 128,
    "num_feat_extract_layers": 7,
    "num_hidden_layers": 24,
    "num_negatives": 100,
    "output_hidden_size": 1024,
    "pad_token_id": 0,
    "position_embeddings_type": "rotary",
    "proj_codevector_dim": 768,
    "rotary_embedding_base": 10000,
    "tdnn_dilation": [1, 2, 3, 1, 1],
    "tdnn_dim": [512, 512, 512, 512, 1500],
    "tdnn_kernel": [5, 3, 3, 1, 1],
    "torch_dtype": "float32",
    "transformers_version": "4.19.0.dev0",
    "use_weighted_layer_sum": False,
    "vocab_size": 32,
    "xvector_output_dim": 512,
}

# config.json as the converter writes it: the yaml's `model:` section in MuQFairseqConfig's field order.
_MUQ_LARGE_CONFIG: dict[str, Any] = {
    "label_rate": 25,
    "num_codebooks": 1,
    "codebook_dim": 16,
    "codebook_size": 8192,
    "features": ["melspec_2048"],
    "hop_length": 240,
    "n_mels": 128,
    "conv_dim": 512,
    "encoder_dim": 1024,
    "encoder_depth": 12,
    "mask_hop": 0.4,
    "mask_prob": 0.6,
    "is_flash": False,
    "stat": {
        "melspec_2048_cnt": 14282760192,
        "melspec_2048_mean": 6.768444971712967,
        "melspec_2048_std": 18.417922652295623,
    },
    "w2v2_config": _W2V2_CONFIG,
    "use_rvq_target": True,
    "use_vq_target": False,
    "use_encodec_target": False,
    "rvq_ckpt_path": None,
    "recon_loss_ratio": None,
    "resume_checkpoint": None,
    "rvq_n_codebooks": 8,
    "rvq_multi_layer_num": 1,
}


def muq_large_config() -> dict[str, Any]:
    """A fresh copy of the released MuQ-large config.json (12 conformer blocks of width 1024)."""
    return copy.deepcopy(_MUQ_LARGE_CONFIG)
